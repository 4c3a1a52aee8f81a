//! The rule language: `inspeq.conf` (settings and alert routes) and `*.inq` check files.
//!
//! Flow: [`lexer`] → LALRPOP grammars (`global.lalrpop`, `checks.lalrpop`, via [`parse`]) → [`ast`] →
//! [`check`] (semantic pass, using the [`metrics`] catalogue) → [`model::Config`]. Every stage reports problems
//! as [`diagnostic::Diagnostic`] values and keeps going. Only [`mod@load_dir`] does I/O. [`names`] holds the
//! validations the daemon repeats where it uses a value (service names, `matching` patterns), so both sides call
//! the same function.

pub mod amount;
pub mod ast;
pub mod bus_address;
pub mod check;
pub mod diagnostic;
pub mod lexer;
pub mod load;
pub mod load_dir;
pub mod metrics;
pub mod model;
pub mod names;
pub mod parse;

pub use diagnostic::{Diagnostic, Severity, render};
pub use load::{Source, load, load_files, load_sources};
pub use load_dir::load_dir;
pub use model::Config;
