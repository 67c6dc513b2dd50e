//! Output of `tapmanager list` and `show`: a table for people, JSON for programs.

use protocol::Attachment;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct InterfaceView {
    network: String,
    ifname: String,
    mac: String,
    address: Option<String>,
    gateway: Option<String>,
    address6: Option<String>,
    gateway6: Option<String>,
    mtu: u32,
    queues: u16,
}

#[derive(Debug, Serialize)]
struct AttachmentView {
    vm: String,
    uid: u32,
    pid: i32,
    created: u64,
    interfaces: Vec<InterfaceView>,
}

fn view(a: &Attachment) -> AttachmentView {
    AttachmentView {
        vm: a.vm.to_string(),
        uid: a.uid,
        pid: a.pid,
        created: a.created,
        interfaces: a
            .interfaces
            .iter()
            .map(|i| InterfaceView {
                network: i.network.to_string(),
                ifname: i.ifname.to_string(),
                mac: i.mac.to_string(),
                address: i.address.map(|(a, p)| format!("{a}/{p}")),
                gateway: i.gateway.map(|g| g.to_string()),
                address6: i
                    .ipv6
                    .as_ref()
                    .map(|l| format!("{}/{}", l.address.0, l.address.1)),
                gateway6: i.ipv6.as_ref().map(|l| l.gateway.to_string()),
                mtu: i.mtu,
                queues: i.queues,
            })
            .collect(),
    }
}

pub fn json(list: &[Attachment]) -> String {
    let v: Vec<_> = list.iter().map(view).collect();
    serde_json::to_string_pretty(&v).expect("plain data serializes")
}

pub fn table(list: &[Attachment]) -> String {
    let mut out = format!(
        "{:<20} {:>6} {:>8} {:<10} {:<14} {:<17} {:<18} {:<6} {}\n",
        "VM", "UID", "PID", "NETWORK", "TAP", "MAC", "ADDRESS", "QUEUES", "ADDRESS6"
    );
    for a in list {
        for i in &a.interfaces {
            let addr = i
                .address
                .map(|(a, p)| format!("{a}/{p}"))
                .unwrap_or_else(|| "-".into());
            let addr6 = i.ipv6.as_ref().map_or_else(
                || "-".into(),
                |l| format!("{}/{}", l.address.0, l.address.1),
            );
            let line = format!(
                "{:<20} {:>6} {:>8} {:<10} {:<14} {:<17} {:<18} {:<6} {}",
                a.vm, a.uid, a.pid, i.network, i.ifname, i.mac, addr, i.queues, addr6
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct StatusView<'a> {
    network: &'a str,
    kind: &'a str,
    ready: bool,
    message: &'a str,
}

pub fn status_json(list: &[protocol::NetworkStatus]) -> String {
    let v: Vec<_> = list
        .iter()
        .map(|n| StatusView {
            network: n.network.as_str(),
            kind: &n.kind,
            ready: n.ready,
            message: &n.message,
        })
        .collect();
    serde_json::to_string_pretty(&v).expect("plain data serializes")
}

pub fn status_table(list: &[protocol::NetworkStatus]) -> String {
    let mut out = format!("{:<16} {:<11} {:<6} {}\n", "NETWORK", "KIND", "READY", "");
    for n in list {
        let ready = if n.ready { "yes" } else { "no" };
        out.push_str(&format!(
            "{:<16} {:<11} {:<6} {}\n",
            n.network, n.kind, ready, n.message
        ));
    }
    out
}
