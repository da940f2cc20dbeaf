//! PID 1 of the stick's initramfs; all logic lives in `hiperiso_runtime::init`.
fn main() {
    hiperiso_runtime::init::main()
}
