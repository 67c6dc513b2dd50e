//! Firecracker opens its TAPs by name only (`host_dev_name` in `network-interfaces`), never
//! from an fd. vmwrapper asks the daemon for TAPs `by_name` (persistent, owned by the
//! caller's uid and group, in the daemon's network namespace), then hands Firecracker a copy
//! of the user's `--config-file` with `network-interfaces` filled in. The copy lives in a
//! memfd passed as `/proc/self/fd/N`, so nothing is left on disk.

use protocol::Interface;

/// Where the config file is named in Firecracker's argv: the index of the argument holding
/// it, whether it is the `--config-file=PATH` form, and the path.
pub fn config_file(command: &[String]) -> Option<(usize, bool, String)> {
    for (i, arg) in command.iter().enumerate() {
        if arg == "--config-file" {
            return command.get(i + 1).map(|p| (i + 1, false, p.clone()));
        }
        if let Some(p) = arg.strip_prefix("--config-file=") {
            return Some((i, true, p.to_owned()));
        }
    }
    None
}

/// The user's config with `network-interfaces` made from `interfaces` (`eth0`, `eth1`, ... in
/// order, each with its MAC and TAP). A config that names interfaces already is refused:
/// vmwrapper's `--net` list is the one place NICs come from.
pub fn fill(config: &str, interfaces: &[Interface]) -> Result<String, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(config).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v
        .as_object_mut()
        .ok_or("not a JSON object (Firecracker's config is one)")?;
    if let Some(existing) = obj.get("network-interfaces") {
        if existing.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(
                "it has network-interfaces already: vmwrapper fills them from its --net \
                 options; remove them from the file"
                    .into(),
            );
        }
    }
    let nics: Vec<serde_json::Value> = interfaces
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            serde_json::json!({
                "iface_id": format!("eth{i}"),
                "guest_mac": iface.mac.to_string(),
                "host_dev_name": iface.ifname.as_str(),
            })
        })
        .collect();
    obj.insert("network-interfaces".into(), serde_json::Value::Array(nics));
    serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
}

/// Puts `text` in a memfd that stays open across exec, and returns the path the exec'd
/// program opens it by.
pub fn memfd_path(text: &str) -> std::io::Result<String> {
    use std::io::Write;
    use std::os::fd::IntoRawFd;
    let fd = nix::sys::memfd::memfd_create(
        c"vmwrapper-firecracker-config",
        nix::sys::memfd::MFdFlags::empty(), // no CLOEXEC: Firecracker must find it
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(text.as_bytes())?;
    // Kept open (not closed on exec) for the hypervisor; it is the process's until it exits.
    let raw = f.into_raw_fd();
    Ok(format!("/proc/self/fd/{raw}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ifname: &str, mac: &str) -> Interface {
        Interface {
            network: "default".parse().unwrap(),
            ifname: ifname.parse().unwrap(),
            mac: mac.parse().unwrap(),
            address: None,
            gateway: None,
            mtu: 1500,
            queues: 1,
            vnet_hdr: false,
            by_name: true,
            dns: Vec::new(),
            search: Vec::new(),
            routes: Vec::new(),
            ipv6: None,
        }
    }

    #[test]
    fn the_config_file_is_found_in_either_form() {
        let argv = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            config_file(&argv("firecracker --no-api --config-file vm.json")),
            Some((3, false, "vm.json".into()))
        );
        assert_eq!(
            config_file(&argv("firecracker --config-file=/tmp/vm.json --no-api")),
            Some((1, true, "/tmp/vm.json".into()))
        );
        assert_eq!(config_file(&argv("firecracker --api-sock /tmp/s")), None);
        assert_eq!(config_file(&argv("firecracker --config-file")), None);
    }

    #[test]
    fn network_interfaces_are_filled_and_the_rest_kept() {
        let cfg = r#"{"boot-source": {"kernel_image_path": "vmlinux"},
                      "machine-config": {"vcpu_count": 1, "mem_size_mib": 128}}"#;
        let out = fill(
            cfg,
            &[
                iface("tm0123456789", "02:aa:00:00:00:01"),
                iface("tmabcdef0123", "02:aa:00:00:00:02"),
            ],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["boot-source"]["kernel_image_path"], "vmlinux");
        assert_eq!(v["machine-config"]["mem_size_mib"], 128);
        assert_eq!(
            v["network-interfaces"],
            serde_json::json!([
                {"iface_id": "eth0", "guest_mac": "02:aa:00:00:00:01", "host_dev_name": "tm0123456789"},
                {"iface_id": "eth1", "guest_mac": "02:aa:00:00:00:02", "host_dev_name": "tmabcdef0123"},
            ])
        );
        // An empty list may stay in a template; a filled one is the user's and is refused.
        assert!(fill(r#"{"network-interfaces": []}"#, &[]).is_ok());
        let taken = r#"{"network-interfaces": [{"iface_id": "eth0", "host_dev_name": "tap0"}]}"#;
        assert!(fill(taken, &[]).unwrap_err().contains("remove them"));
        assert!(fill("[1]", &[]).is_err());
        assert!(fill("{", &[]).unwrap_err().starts_with("not JSON"));
    }
}
