//! The old spellings of flags, accepted for one more release as hidden aliases (clap's `alias`)
//! and said once as a warning, so that scripts keep working while they are changed
//! (docs/CLI.md, "Grammar").

/// The release that stops accepting the old spellings.
pub const REMOVED_IN: &str = "0.3";

/// An old spelling: in commands whose path starts with `command`, `old` now reads `new`.
pub struct OldSpelling {
    pub command: &'static str,
    pub old: &'static str,
    pub new: &'static str,
}

/// Every old spelling still accepted.
pub const OLD_SPELLINGS: &[OldSpelling] = &[
    OldSpelling {
        command: "ca",
        old: "--dir",
        new: "--ca-dir",
    },
    OldSpelling {
        command: "ca serve",
        old: "--admin-listen",
        new: "--admin",
    },
    OldSpelling {
        command: "cert issue",
        old: "--out",
        new: "--svid-dir",
    },
    OldSpelling {
        command: "cert request",
        old: "--out",
        new: "--svid-dir",
    },
    OldSpelling {
        command: "cert renew",
        old: "--dir",
        new: "--svid-dir",
    },
    OldSpelling {
        command: "cert renew",
        old: "--admin-listen",
        new: "--admin",
    },
    OldSpelling {
        command: "cert inspect",
        old: "--json",
        new: "-o json",
    },
    OldSpelling {
        command: "policy compile",
        old: "--format",
        new: "-o",
    },
    OldSpelling {
        command: "policy sync",
        old: "--source",
        new: "the SOURCE argument",
    },
    OldSpelling {
        command: "inject",
        old: "--filename",
        new: "the FILE argument",
    },
    OldSpelling {
        command: "inject",
        old: "-f",
        new: "the FILE argument",
    },
];

/// The warnings for the old spellings in `args` (the command line after the program name),
/// given the path of the command clap parsed (`["ca", "init"]`).
pub fn warnings(path: &[&str], args: &[String]) -> Vec<String> {
    let command = path.join(" ");
    let given = |flag: &str| {
        args.iter().take_while(|a| *a != "--").any(|a| {
            a == flag
                || a.strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with('='))
        })
    };
    OLD_SPELLINGS
        .iter()
        .filter(|s| {
            (command == s.command || command.starts_with(&format!("{} ", s.command)))
                && given(s.old)
        })
        .map(|s| {
            format!(
                "{} is an old spelling in `palisade {command}`: say {} (the old one is accepted until {REMOVED_IN})",
                s.old, s.new
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn an_old_spelling_is_named_with_its_new_one_in_its_own_commands_only() {
        let w = warnings(&["ca", "init"], &args("ca init --dir x --trust-domain t"));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("--dir is an old spelling in `palisade ca init`: say --ca-dir"));
        let w = warnings(
            &["cert", "renew"],
            &args("cert renew --dir=x --admin-listen=a"),
        );
        assert_eq!(w.len(), 2, "{w:?}");
        // --dir is not old in `cert issue`, and `--directory` is not `--dir`.
        assert!(warnings(&["cert", "issue"], &args("cert issue --dir x")).is_empty());
        assert!(warnings(&["ca", "init"], &args("ca init --directory x")).is_empty());
        // After `--`, nothing is a flag.
        assert!(warnings(&["inject"], &args("inject -- -f")).is_empty());
        assert!(warnings(&["ca", "initx"], &args("ca initx --dir x")).len() == 1);
        assert!(warnings(&["cab"], &args("cab --dir x")).is_empty());
    }
}
