//! The Lua scripts, one per operation, each with the shared prelude.
//!
//! `prelude.lua` reads a merge request's state; `writes.lua` holds what
//! changes it. A writing script is prelude, writes, then its own body. The
//! status script places both itself (see `with_parts`), so a read of an idle
//! merge request runs neither.

use std::sync::OnceLock;

use redis::Script;

const PRELUDE: &str = include_str!("lua/prelude.lua");
const WRITES: &str = include_str!("lua/writes.lua");

/// Every script the core runs.
pub struct Scripts {
    pub status: Script,
    pub start: Script,
    pub finish: Script,
    pub schedule: Script,
    pub drain: Script,
    pub restore: Script,
    pub reset_begin: Script,
    pub reset_finish: Script,
    pub clear: Script,
    pub snapshot: Script,
    pub index: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{WRITES}\n{body}"))
}

/// A script that says itself where the prelude and the write half go.
fn with_parts(body: &str) -> Script {
    assert!(
        body.matches("--[[prelude]]").count() == 1 && body.matches("--[[writes]]").count() == 1
    );
    Script::new(
        &body
            .replace("--[[prelude]]", PRELUDE)
            .replace("--[[writes]]", WRITES),
    )
}

/// The scripts, built once per process.
pub fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        status: with_parts(include_str!("lua/status.lua")),
        start: with_prelude(include_str!("lua/start.lua")),
        finish: with_prelude(include_str!("lua/finish.lua")),
        schedule: with_prelude(include_str!("lua/schedule.lua")),
        drain: with_prelude(include_str!("lua/drain.lua")),
        restore: with_prelude(include_str!("lua/restore.lua")),
        reset_begin: with_prelude(include_str!("lua/reset_begin.lua")),
        reset_finish: with_prelude(include_str!("lua/reset_finish.lua")),
        clear: with_prelude(include_str!("lua/clear.lua")),
        snapshot: with_prelude(include_str!("lua/snapshot.lua")),
        index: Script::new(include_str!("lua/index.lua")),
    })
}
