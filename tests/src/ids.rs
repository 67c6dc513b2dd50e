//! Every uid and gid the tests use, in one table: two test files once shared a group (and
//! two others a pair of users), so one file's sandbox could let another's user in. A test
//! file takes its own with `use tapmanager_tests::ids::FILE::{GROUP, ...}`; the test below
//! checks that no two are the same and that no test file defines one of its own.

pub mod bridge {
    pub const GROUP: u32 = 47_001;
    pub const USER: u32 = 47_002;
    pub const OTHER: u32 = 47_003;
}

pub mod cni {
    pub const GROUP: u32 = 47_051;
}

pub mod crash {
    pub const GROUP: u32 = 47_121;
}

pub mod desktop {
    pub const GROUP: u32 = 47_081;
}

pub mod down {
    pub const GROUP: u32 = 47_171;
}

pub mod hostile {
    pub const GROUP: u32 = 47_091;
    pub const USER: u32 = 47_092;
    pub const OTHER: u32 = 47_093;
    pub const STRANGER: u32 = 47_094;
}

pub mod hostile_guests {
    pub const GROUP: u32 = 47_101;
    pub const MEMBER: u32 = 47_102;
}

pub mod isolated {
    pub const GROUP: u32 = 47_021;
}

pub mod local_attacks {
    pub const GROUP: u32 = 47_111;
    pub const MEMBER: u32 = 47_112;
    pub const STRANGER: u32 = 47_113;
}

pub mod macvtap {
    pub const GROUP: u32 = 47_041;
}

pub mod masquerade {
    pub const GROUP: u32 = 47_031;
}

pub mod pod {
    pub const GROUP: u32 = 47_061;
    pub const USER: u32 = 47_062;
}

pub mod admin {
    pub const GROUP: u32 = 47_154;
    pub const USER: u32 = 47_155;
    /// A user in no group of the daemon's.
    pub const OUTSIDER: u32 = 47_153;
}

pub mod policy {
    pub const GROUP: u32 = 47_151;
    pub const USER: u32 = 47_152;
}

pub mod privileges {
    pub const GROUP: u32 = 47_071;
}

pub mod qemu {
    pub const GROUP: u32 = 47_011;
    pub const USER: u32 = 47_012;
}

pub mod soak {
    pub const GROUP: u32 = 47_131;
}

pub mod vm_guest {
    pub const GROUP: u32 = 47_161;
    pub const USER: u32 = 47_162;
}

pub mod vmwrapper {
    pub const ADAPTERS_GROUP: u32 = 47_146;
    pub const CLOUDINIT_GROUP: u32 = 47_147;
    pub const VICTIM: u32 = 47_144;
    pub const ATTACKER: u32 = 47_145;
    pub const GROUP: u32 = 47_141;
    pub const USER: u32 = 47_142;
    pub const OTHER: u32 = 47_143;
}

pub mod bench_attach {
    pub const GROUP: u32 = 47_181;
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_two_ids_are_the_same_and_none_is_defined_elsewhere() {
        let all = [
            ("bridge::GROUP", super::bridge::GROUP),
            ("bridge::USER", super::bridge::USER),
            ("bridge::OTHER", super::bridge::OTHER),
            ("cni::GROUP", super::cni::GROUP),
            ("crash::GROUP", super::crash::GROUP),
            ("desktop::GROUP", super::desktop::GROUP),
            ("down::GROUP", super::down::GROUP),
            ("hostile::GROUP", super::hostile::GROUP),
            ("hostile::USER", super::hostile::USER),
            ("hostile::OTHER", super::hostile::OTHER),
            ("hostile::STRANGER", super::hostile::STRANGER),
            ("hostile_guests::GROUP", super::hostile_guests::GROUP),
            ("hostile_guests::MEMBER", super::hostile_guests::MEMBER),
            ("isolated::GROUP", super::isolated::GROUP),
            ("local_attacks::GROUP", super::local_attacks::GROUP),
            ("local_attacks::MEMBER", super::local_attacks::MEMBER),
            ("local_attacks::STRANGER", super::local_attacks::STRANGER),
            ("macvtap::GROUP", super::macvtap::GROUP),
            ("masquerade::GROUP", super::masquerade::GROUP),
            ("pod::GROUP", super::pod::GROUP),
            ("pod::USER", super::pod::USER),
            ("policy::GROUP", super::policy::GROUP),
            ("admin::GROUP", super::admin::GROUP),
            ("admin::USER", super::admin::USER),
            ("admin::OUTSIDER", super::admin::OUTSIDER),
            (
                "vmwrapper::ADAPTERS_GROUP",
                super::vmwrapper::ADAPTERS_GROUP,
            ),
            (
                "vmwrapper::CLOUDINIT_GROUP",
                super::vmwrapper::CLOUDINIT_GROUP,
            ),
            ("bench_attach::GROUP", super::bench_attach::GROUP),
            ("policy::USER", super::policy::USER),
            ("privileges::GROUP", super::privileges::GROUP),
            ("qemu::GROUP", super::qemu::GROUP),
            ("qemu::USER", super::qemu::USER),
            ("soak::GROUP", super::soak::GROUP),
            ("vm_guest::GROUP", super::vm_guest::GROUP),
            ("vm_guest::USER", super::vm_guest::USER),
            ("vmwrapper::VICTIM", super::vmwrapper::VICTIM),
            ("vmwrapper::ATTACKER", super::vmwrapper::ATTACKER),
            ("vmwrapper::GROUP", super::vmwrapper::GROUP),
            ("vmwrapper::USER", super::vmwrapper::USER),
            ("vmwrapper::OTHER", super::vmwrapper::OTHER),
        ];
        let mut seen = std::collections::HashMap::new();
        for (name, id) in all {
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
