//! Traffic control: `tc qdisc` and `tc filter` (the ingress redirects of the tc-redirect
//! binding).

use super::{errno, LinkError, Links};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirror, TcActionMirrorOption, TcActionOption,
    TcActionType, TcFilterU32Option, TcMirror, TcMirrorActionType, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};

impl Links {
    /// `tc qdisc del dev INDEX ingress` (and its filters); none there is success.
    pub async fn del_ingress_qdisc(&self, index: u32) -> Result<(), LinkError> {
        let mut req = self.handle.qdisc().del(index as i32);
        req.message_mut().header.parent = netlink_packet_route::tc::TcHandle::INGRESS;
        req.message_mut().header.handle = 0xffff_0000.into();
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if [libc::ENOENT, libc::EINVAL].contains(&errno(&e)) => Ok(()),
            Err(e) => Err(LinkError::Qdisc(index, e)),
        }
    }

    /// `tc qdisc add dev INDEX ingress`; one that is already there is success.
    pub async fn add_ingress_qdisc(&self, index: u32) -> Result<(), LinkError> {
        match self
            .handle
            .qdisc()
            .add(index as i32)
            .ingress()
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == libc::EEXIST => Ok(()),
            Err(e) => Err(LinkError::Qdisc(index, e)),
        }
    }

    /// `tc filter add dev FROM parent ffff: prio PRIO protocol PROTOCOL u32 match KEYS
    /// action mirred egress redirect dev TO`: what the keys match leaves by `to`; the rest
    /// goes on into `from`'s own stack. No keys match every frame. `protocol` is an
    /// ethertype in host order (0x0003 for all).
    pub async fn redirect_ingress(
        &self,
        from: u32,
        to: u32,
        prio: u16,
        protocol: u16,
        keys: Vec<TcU32Key>,
    ) -> Result<(), LinkError> {
        self.u32_ingress(from, Some(to), prio, protocol, keys).await
    }

    /// `tc filter add dev FROM parent ffff: prio PRIO protocol PROTOCOL u32 match KEYS`
    /// with no action: what the keys match ends the classification and goes on into
    /// `from`'s own stack, never reaching a later filter's redirect.
    pub async fn keep_ingress(
        &self,
        from: u32,
        prio: u16,
        protocol: u16,
        keys: Vec<TcU32Key>,
    ) -> Result<(), LinkError> {
        self.u32_ingress(from, None, prio, protocol, keys).await
    }

    async fn u32_ingress(
        &self,
        from: u32,
        to: Option<u32>,
        prio: u16,
        protocol: u16,
        keys: Vec<TcU32Key>,
    ) -> Result<(), LinkError> {
        let to_index = to.unwrap_or(from);
        let mut mirred = TcMirror::default();
        mirred.generic.action = TcActionType::Stolen;
        mirred.eaction = TcMirrorActionType::EgressRedir;
        mirred.ifindex = to_index;
        let mut action = TcAction::default();
        action.attributes = vec![
            TcActionAttribute::Kind(TcActionMirror::KIND.to_owned()),
            TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
                mirred,
            ))]),
        ];
        let mut selector = TcU32Selector::default();
        selector.flags = TcU32SelectorFlags::Terminal;
        selector.keys = if keys.is_empty() {
            vec![TcU32Key::default()] // mask 0: matches everything
        } else {
            keys
        };
        selector.nkeys = u8::try_from(selector.keys.len())
            .map_err(|_| LinkError::Redirect(from, to_index, rtnetlink::Error::RequestFailed))?;
        self.handle
            .traffic_filter(from as i32)
            .add()
            .parent(0xffff_0000)
            .priority(prio)
            .protocol(protocol.to_be())
            .u32(&match to {
                Some(_) => vec![
                    TcFilterU32Option::Selector(selector),
                    TcFilterU32Option::Action(vec![action]),
                ],
                None => vec![TcFilterU32Option::Selector(selector)],
            })
            .map_err(|e| LinkError::Redirect(from, to_index, e))?
            .execute()
            .await
            .map_err(|e| LinkError::Redirect(from, to_index, e))
    }
}

/// u32 keys matching `bytes` at `offset` from the network header (negative offsets reach into
/// the Ethernet header: the source MAC is at -8), merged into the aligned 32-bit words
/// `tc filter ... u32` works on.
pub fn u32_keys(matches: &[(i32, &[u8])]) -> Vec<TcU32Key> {
    let mut words: std::collections::BTreeMap<i32, (u32, u32)> = Default::default();
    for (offset, bytes) in matches {
        for (i, b) in bytes.iter().enumerate() {
            let at = offset + i as i32;
            let word = at.div_euclid(4) * 4;
            let shift = 8 * (3 - at.rem_euclid(4)) as u32;
            let (mask, val) = words.entry(word).or_default();
            *mask |= 0xff << shift;
            *val |= u32::from(*b) << shift;
        }
    }
    words
        .into_iter()
        .map(|(off, (mask, val))| {
            let mut key = TcU32Key::default();
            (key.mask, key.val, key.off) = (mask, val, off);
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u32_keys_merge_bytes_into_aligned_words() {
        // An ARP sender: the frame's source MAC at -8, the ARP sha at 8 and spa at 14.
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let ip = [10, 0, 0, 2];
        let keys = u32_keys(&[(-8, &mac), (8, &mac), (14, &ip)]);
        let k = |off, mask, val| {
            let mut key = TcU32Key::default();
            (key.mask, key.val, key.off) = (mask, val, off);
            key
        };
        assert_eq!(
            keys,
            vec![
                k(-8, 0xffff_ffff, 0x0211_2233),
                k(-4, 0xffff_0000, 0x4455_0000),
                k(8, 0xffff_ffff, 0x0211_2233),
                k(12, 0xffff_ffff, 0x4455_0a00),
                k(16, 0xffff_0000, 0x0002_0000),
            ]
        );
    }
}
