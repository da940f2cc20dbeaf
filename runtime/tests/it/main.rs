//! hiperiso-runtime's integration tests (hiperiso-log, fixtures, golden traces), one binary.

mod analyze_fixtures;
mod cli;
mod session_list;
mod trace_golden;
