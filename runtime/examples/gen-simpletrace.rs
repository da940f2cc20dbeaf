//! Writes a synthetic simpletrace v4 file of at least SIZE bytes, plus the
//! matching trace-events declarations, for the decoding benchmark
//! (tests/bench/trace.sh). The event mix resembles a boot: port I/O, PCI
//! config accesses with a device-name string, ATAPI reads, block reads.
//!
//!   cargo run --release -p hiperiso-runtime --example gen-simpletrace -- OUT.bin OUT.events SIZE_MIB

use hiperiso_runtime::simpletrace::{SimpleTraceWriter, WriteArg};
use std::io::{BufWriter, Write};

const EVENTS: &[&str] = &[
    r#"cpu_in(unsigned int addr, char size, unsigned int val) "addr 0x%x(%c) value %u""#,
    r#"cpu_out(unsigned int addr, char size, unsigned int val) "addr 0x%x(%c) value %u""#,
    r#"pci_cfg_read(const char *dev, uint32_t bus, uint32_t slot, uint32_t func, unsigned offs, unsigned val) "%s %02x:%02x.%x @0x%x -> 0x%x""#,
    r#"ide_atapi_cmd_read(void *s, const char *method, int lba, int nb_sectors) "IDEState: %p; read %s: LBA=%d nb_sectors=%d""#,
    r#"blk_co_preadv(void *blk, void *bs, int64_t offset, int64_t bytes, int flags) "blk %p bs %p offset %"PRId64" bytes %" PRId64 " flags 0x%x""#,
];

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, events, size_mib] = &args[..] else {
        eprintln!("usage: gen-simpletrace OUT.bin OUT.events SIZE_MIB");
        std::process::exit(2);
    };
    let target: u64 = size_mib.parse::<u64>().expect("SIZE_MIB") << 20;
    std::fs::write(events, EVENTS.join("\n") + "\n")?;
    let file = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    let mut w = SimpleTraceWriter::new(file)?;
    let names = [
        "cpu_in",
        "cpu_out",
        "pci_cfg_read",
        "ide_atapi_cmd_read",
        "blk_co_preadv",
    ];
    for (id, name) in names.iter().enumerate() {
        w.mapping(id as u64, name)?;
    }
    let devices: [&[u8]; 4] = [b"mch", b"ICH9-LPC", b"ich9-ahci", b"VGA"];
    let u = WriteArg::U64;
    let (mut written, mut i, mut ts) = (24u64, 0u64, 1_000_000u64);
    // Deterministic xorshift for a varied but reproducible mix.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while written < target {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ts += 50 + (x & 0x3ff);
        written += 8 + 24;
        match x % 10 {
            0..=3 => {
                w.event(
                    0,
                    ts,
                    4242,
                    &[
                        u(0x60 + (x >> 8) % 8),
                        u(u64::from(b'b')),
                        u(x >> 32 & 0xff),
                    ],
                )?;
                written += 24;
            }
            4..=5 => {
                w.event(
                    1,
                    ts,
                    4242,
                    &[u(0x402), u(u64::from(b'b')), u(x >> 40 & 0x7f)],
                )?;
                written += 24;
            }
            6..=7 => {
                let dev = devices[(x >> 20) as usize % devices.len()];
                w.event(
                    2,
                    ts,
                    4242,
                    &[
                        WriteArg::Str(dev),
                        u(0),
                        u(x >> 24 & 0x1f),
                        u(0),
                        u(x >> 30 & 0xfc),
                        u(0x8086),
                    ],
                )?;
                written += 4 + dev.len() as u64 + 40;
            }
            8 => {
                w.event(
                    3,
                    ts,
                    4242,
                    &[u(0x55d0_0000), WriteArg::Str(b"dma"), u(i % 300_000), u(16)],
                )?;
                written += 4 + 3 + 24;
            }
            _ => {
                w.event(
                    4,
                    ts,
                    4242,
                    &[
                        u(0x55d0_1000),
                        u(0x55d0_2000),
                        u((i % 300_000) * 2048),
                        u(32_768),
                        u(0),
                    ],
                )?;
                written += 40;
            }
        }
        i += 1;
    }
    w.into_inner().flush()
}
