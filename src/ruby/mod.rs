//! The Ruby binding: `ApprovalSync::Native::Tracker` over the core. Ruby code
//! in `lib/` validates arguments, resolves the feature flag and calls workers;
//! this layer only moves values across and releases the GVL around I/O.

mod errors;
mod gvl;
mod tracker;

use magnus::{prelude::*, Error, Ruby};

#[magnus::init]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let top = ruby.define_module("ApprovalSync")?;
    let native = top.define_module("Native")?;
    errors::init(ruby)?;
    tracker::init(ruby, native)?;
    Ok(())
}
