fn main() {
    eprintln!("hiperiso-build: not built yet");
    std::process::exit(1);
}
