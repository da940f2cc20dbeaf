//! Convert QEMU `screendump` PPMs to PNG with `picture` (fixture making:
//! runtime/tests/fixtures/screens/make.sh). Usage: ppm2png IN.ppm OUT.png…
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let [input, output] = pair else {
            return Err("usage: ppm2png IN.ppm OUT.png [IN.ppm OUT.png…]".into());
        };
        let picture = hiperiso_runtime::picture::ppm_to_rgb(&std::fs::read(input)?)?;
        std::fs::write(output, hiperiso_runtime::picture::try_encode_png(&picture)?)?;
    }
    Ok(())
}
