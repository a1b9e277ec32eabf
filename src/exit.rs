//! The exit codes, one meaning each across every command (docs/CLI.md has the table). Scripts
//! and supervisors branch on them: 3 is an answer, 75 says "try again", the rest are failures.

use std::process::ExitCode;

/// It worked; for a question (`policy explain`, `cert inspect`, `sidecar probe`,
/// `check-sandbox`): yes.
pub const SUCCESS: u8 = 0;
/// It failed: the input does not load, the CA refused, an operation went wrong. Retrying the
/// same command will not help until something changes.
pub const FAILURE: u8 = 1;
// 2: the command line itself is wrong (clap's own code for usage errors; clap exits with it).
/// A question answered no: denied (`policy explain`), not valid now (`cert inspect`), not
/// ready (`sidecar probe`), a sandbox that does not hold (`check-sandbox`). Not an error.
pub const NO: u8 = 3;
/// A local file the command needs (bundle, certificate, key, token) cannot be used: the fix is
/// on this machine.
#[cfg_attr(not(feature = "tools"), allow(dead_code))]
pub const LOCAL: u8 = 4;
/// Temporarily unavailable (the CA unreachable, busy or limiting us): retry later. 75 is
/// EX_TEMPFAIL of sysexits.h, which supervisors and mail systems already read that way.
#[cfg_attr(not(feature = "tools"), allow(dead_code))]
pub const RETRY_LATER: u8 = 75;

/// `yes` as [`SUCCESS`], no as [`NO`].
pub fn answer(yes: bool) -> ExitCode {
    ExitCode::from(if yes { SUCCESS } else { NO })
}
