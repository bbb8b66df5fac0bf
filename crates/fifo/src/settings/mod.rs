//! The one settings type every subcommand runs on, merged from four layers,
//! low to high: defaults < `fifo.toml` (or `--config FILE`) < environment <
//! flags, and `fifo run`'s plan resolved from it before any I/O.
//!
//! Layout: `keys` declares every setting once (the table [`KEYS`] and the
//! [`Settings`] it fills); `layers` reads and checks each value against its
//! row, naming the layer it came from; `plan` turns settings and `fifo
//! run`'s flags into a [`RunPlan`], with the checks across settings;
//! `error` is the typed error all of them return, its hint as data.
//!
//! The checked values are read into [`Settings`] by serde, which refuses
//! any key the struct lacks; as `keys` declares both from one row, they
//! cannot disagree.

mod error;
mod keys;
mod layers;
mod plan;
#[cfg(test)]
mod tests;

pub(crate) use error::{SettingsError, queue_url_hint};
pub(crate) use keys::*;
pub(crate) use layers::{Flags, load};
pub(crate) use plan::{HandlerPlan, RunPlan, RunRequest};
