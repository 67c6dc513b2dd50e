//! The client side of a sample: one NIC attached and released, timed.

use super::*;

pub(crate) fn one_nic(vm: &VmId) -> AttachRequest {
    one_nic_on(vm, "default")
}

pub(crate) fn one_nic_on(vm: &VmId, network: &str) -> AttachRequest {
    AttachRequest {
        vm: vm.clone(),
        networks: vec![NetworkRequest::new(network.parse().expect("network name"))],
    }
}

/// Attaches `vm` on `client`, returning the time from request to fds.
pub(crate) fn timed_attach(client: &mut Client, vm: &VmId) -> (Duration, Vec<OwnedFd>) {
    let t = Instant::now();
    let (_attachment, fds) = client.attach(one_nic(vm)).expect("attach");
    let took = t.elapsed();
    assert_eq!(fds.len(), 1, "one NIC, one queue: one fd");
    (took, fds)
}

/// [`timed_attach`] on `network`, also returning the NIC's host-side link name.
pub(crate) fn timed_attach_on(
    client: &mut Client,
    vm: &VmId,
    network: &str,
) -> (Duration, String, Vec<OwnedFd>) {
    let t = Instant::now();
    let (attachment, fds) = client.attach(one_nic_on(vm, network)).expect("attach");
    let took = t.elapsed();
    assert_eq!(fds.len(), 1, "one NIC, one queue: one fd");
    let ifname = attachment.interfaces[0].ifname.to_string();
    (took, ifname, fds)
}

/// Releases `vm` while its fds are still held (as a hypervisor would), then closes them.
pub(crate) fn timed_release(client: &mut Client, vm: &VmId, fds: Vec<OwnedFd>) -> Duration {
    let t = Instant::now();
    client.release(vm).expect("release");
    let took = t.elapsed();
    drop(fds);
    took
}

pub(crate) fn vm_id(prefix: &str, i: usize) -> VmId {
    format!("{prefix}-{i}").parse().expect("vm id")
}

/// Attaches `n` VMs that stay for the whole run: ports the measured attaches live beside.
pub(crate) fn hold_ports(sb: &Sandbox, n: usize) -> Vec<(VmId, Vec<OwnedFd>)> {
    let mut client = sb.client();
    (0..n)
        .map(|i| {
            check_interrupted();
            let vm = vm_id("held", i);
            let (_, fds) = timed_attach(&mut client, &vm);
            (vm, fds)
        })
        .collect()
}
