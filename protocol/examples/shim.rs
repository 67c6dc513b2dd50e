//! A container runtime shim's side of the shim path, whole: connect, hand the daemon the
//! pod's network namespace, take over one of its interfaces, receive the TAP fd, and release.
//! A real shim would exec its hypervisor with the fd instead of releasing at once (the daemon
//! watches the shim's pid, so the exec'd hypervisor's exit ends the attachment).
//!
//! ```text
//! cargo run -p tapmanager-protocol --example shim -- SOCKET NETNS NETWORK IFNAME
//! # e.g. /run/tapmanager/tapmanager.sock /proc/4242/ns/net pods eth0
//! ```

use protocol::{AttachRequest, Client, NetworkRequest};
use std::os::fd::{AsFd, AsRawFd};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, netns, network, ifname] = args.as_slice() else {
        eprintln!("usage: shim SOCKET NETNS NETWORK IFNAME");
        std::process::exit(2);
    };
    let mut client = Client::connect(socket)?;
    // Opened with the shim's own rights; the daemon gets the fd, never the path.
    let ns = std::fs::File::open(netns)?;
    let mut nic = NetworkRequest::new(network.parse()?);
    nic.take_over = Some(ifname.parse()?);
    let request = AttachRequest {
        vm: format!("shim-{}", std::process::id()).parse()?,
        networks: vec![nic],
    };
    let (attachment, fds) = match client.attach_pod(request, ns.as_fd()) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("shim: {}", protocol::error_chain(&e));
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            std::process::exit(1);
        }
    };
    for (iface, fd) in attachment.interfaces.iter().zip(&fds) {
        let (ip, prefix) = iface.address.expect("a pod NIC has the pod's address");
        println!(
            "{}: TAP fd {} for the guest, MAC {}, address {ip}/{prefix}, gateway {}",
            iface.ifname,
            fd.as_raw_fd(),
            iface.mac,
            iface.gateway.map_or("-".to_owned(), |g| g.to_string())
        );
    }
    client.release(&attachment.vm)?;
    println!("released {}", attachment.vm);
    Ok(())
}
