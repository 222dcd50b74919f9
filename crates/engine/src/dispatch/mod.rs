//! The dispatcher: one lane per destination, fed from memory as events arrive and from the
//! store after a restart, plus the recorder that writes attempts in batches.

pub(crate) mod lane;
pub(crate) mod queue;
pub(crate) mod recorder;
pub(crate) mod refill;
