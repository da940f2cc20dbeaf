//! `hiperiso-build config check FILE`: a hiperiso.json checked as
//! hiperiso-init reads it, each problem with its line and key.

use std::fs;
use std::path::Path;

use hiperiso_runtime::config_check::{self, Report};
use hiperiso_stick::io::io_err;

use crate::commands::error::{Error, Result};

/// `hiperiso-build config check FILE`.
pub fn check(file: &Path) -> Result<()> {
    let text = fs::read_to_string(file).map_err(io_err("read", file))?;
    let name = file.display().to_string();
    let problems = config_check::check(&name, &text);
    if problems.is_empty() {
        println!("{name}: no problems");
        return Ok(());
    }
    print!("{}", Report(&name, &problems));
    Err(Error::Config {
        file: file.to_path_buf(),
        count: problems.len(),
    })
}
