fn main() {
    eprintln!("hiperiso-init: not built yet");
    std::process::exit(1);
}
