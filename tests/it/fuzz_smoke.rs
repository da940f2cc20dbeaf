//! Every fuzz target of `runtime/fuzz` (the very functions cargo-fuzz
//! runs) over its seeds, its regression inputs (crashes fuzzing found, now
//! fixed) and a few seconds of deterministic mutations: CI's smoke of the
//! fuzzers, on stable Rust without libFuzzer. Long runs: docs/hiperiso-log.md, "Tests,
//! fixtures, fuzzing, benchmark".

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use hiperiso_tests::workspace_root;

#[allow(dead_code)]
#[path = "../../runtime/fuzz/src/lib.rs"]
mod fuzz;

/// Mutation time per target.
const BUDGET: Duration = Duration::from_secs(2);

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_fuzz_target_survives_its_seeds_regressions_and_mutations() {
    let root = workspace_root().join("runtime/fuzz");
    for (name, target) in fuzz::targets::ALL {
        let mut inputs = Vec::new();
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                inputs.push(fs::read(entry.unwrap().path()).unwrap());
            }
        }
        assert!(!inputs.is_empty(), "{name}: no runtime/fuzz/seeds/{name}/");
        let run = |data: &[u8], what: &str| {
            if catch_unwind(AssertUnwindSafe(|| target(data))).is_err() {
                let saved = std::env::temp_dir().join(format!("fuzz-smoke-{name}-crash"));
                fs::write(&saved, data).unwrap();
                panic!(
                    "fuzz target {name} panicked on {what}; input saved as {} \
                     (reproduce: cd runtime/fuzz && cargo +nightly fuzz run {name} FILE)",
                    saved.display()
                );
            }
        };
        for input in &inputs {
            run(input, "a seed or regression input");
        }
        let mut state = 0x9e37_79b9_7f4a_7c15;
        let mut mutations = 0usize;
        let start = Instant::now();
        while start.elapsed() < BUDGET {
            let mut data = inputs[mutations % inputs.len()].clone();
            for _ in 0..=xorshift(&mut state) % 8 {
                if data.is_empty() {
                    break;
                }
                let at = (xorshift(&mut state) % data.len() as u64) as usize;
                data[at] ^= (xorshift(&mut state) as u8) | 1;
            }
            run(&data, "a mutation");
            mutations += 1;
        }
        eprintln!("{name}: {} inputs, {mutations} mutations", inputs.len());
    }
}
