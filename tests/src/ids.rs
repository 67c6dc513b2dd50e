//! Every uid and gid the tests use, in one table: two test files once shared a group (and
//! two others a pair of users), so one file's sandbox could let another's user in. A test
//! file takes its own with `use tapmanager_tests::ids::FILE::{GROUP, ...}`; the test below
//! checks that no two are the same and that no test file defines one of its own.

/// Defines each file's module of ids and [`ALL`], the list the test below checks, from one
/// table, so an id cannot be added without being checked.
macro_rules! ids {
    ($($file:ident { $($(#[$doc:meta])* $name:ident = $id:expr,)* })*) => {
        $(pub mod $file { $($(#[$doc])* pub const $name: u32 = $id;)* })*
        /// Every id, with its `file::NAME`.
        pub const ALL: &[(&str, u32)] = &[$($((concat!(stringify!($file), "::", stringify!($name)), $file::$name),)*)*];
    };
}

ids! {
    bridge {
        GROUP = 47_001,
        USER = 47_002,
        OTHER = 47_003,
    }
    cni {
        GROUP = 47_051,
    }
    crash {
        GROUP = 47_121,
    }
    desktop {
        GROUP = 47_081,
    }
    down {
        GROUP = 47_171,
    }
    hostile {
        GROUP = 47_091,
        USER = 47_092,
        OTHER = 47_093,
        STRANGER = 47_094,
    }
    hostile_guests {
        GROUP = 47_101,
        MEMBER = 47_102,
    }
    isolated {
        GROUP = 47_021,
    }
    local_attacks {
        GROUP = 47_111,
        MEMBER = 47_112,
        STRANGER = 47_113,
    }
    macvtap {
        GROUP = 47_041,
    }
    masquerade {
        GROUP = 47_031,
    }
    pod {
        GROUP = 47_061,
        USER = 47_062,
    }
    routed {
        GROUP = 47_211,
    }
    admin {
        GROUP = 47_154,
        USER = 47_155,
        /// A user in no group of the daemon's.
        OUTSIDER = 47_153,
    }
    policy {
        GROUP = 47_151,
        USER = 47_152,
    }
    privileges {
        GROUP = 47_071,
    }
    qemu {
        GROUP = 47_011,
        USER = 47_012,
    }
    soak {
        GROUP = 47_131,
    }
    vm_guest {
        GROUP = 47_161,
        USER = 47_162,
    }
    vmwrapper {
        ADAPTERS_GROUP = 47_146,
        CLOUDINIT_GROUP = 47_147,
        VICTIM = 47_144,
        ATTACKER = 47_145,
        GROUP = 47_141,
        USER = 47_142,
        OTHER = 47_143,
    }
    bench_attach {
        GROUP = 47_181,
    }
    journal {
        GROUP = 47_191,
    }
    ipv6 {
        GROUP = 47_201,
        OTHER_GROUP = 47_202,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_two_ids_are_the_same_and_none_is_defined_elsewhere() {
        let mut seen = std::collections::HashMap::new();
        for &(name, id) in super::ALL {
            if let Some(other) = seen.insert(id, name) {
                panic!("{name} and {other} are both {id}");
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            // An id is 47 and three digits, with or without the underscore.
            let own = text
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .find(|w| {
                    let digits: String = w.chars().filter(|c| *c != '_').collect();
                    digits.len() == 5 && digits.starts_with("47") && digits.parse::<u32>().is_ok()
                });
            assert!(
                own.is_none(),
                "{} uses a test id of its own ({own:?}): add it to tests/src/ids.rs",
                path.display()
            );
        }
    }
}
