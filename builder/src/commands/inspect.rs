//! `hiperiso-build inspect IMAGE|DEVICE`: what a stick holds.

use hiperiso_installer::inspect;

use crate::cli::InspectArgs;
use crate::commands::error::DiskError;
use crate::commands::error::Result;

/// `hiperiso-build inspect`.
pub fn inspect(args: &InspectArgs) -> Result<()> {
    let found = inspect::inspect_path(&args.target).map_err(DiskError::from)?;
    print!("{found}");
    Ok(())
}
