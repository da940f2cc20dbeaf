fn main() {
    eprintln!("hiperiso-log: not built yet");
    std::process::exit(1);
}
