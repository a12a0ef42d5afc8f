//! The cluster's network: a bridge in the root namespace and, per broker, a namespace with
//! two veth pairs (the picture is in the parent module). Everything through `ip`.

use super::*;

pub(super) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub(super) fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

pub(super) fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Refuses names and a subnet that something else on this host uses already.
pub(super) fn check_network_free(layout: &ClusterLayout) -> Result<()> {
    let taken = |what: &str, name: &str| {
        anyhow!(
            "{what} {name} exists already: another cluster named {:?} (started with another \
             --dir?) or something else uses it; give --name, or stop that cluster",
            layout.name
        )
    };
    if interface_exists(&layout.bridge) {
        return Err(taken("interface", &layout.bridge));
    }
    for broker in &layout.brokers {
        if netns_exists(&broker.netns) {
            return Err(taken("network namespace", &broker.netns));
        }
        for veth in [&broker.kernel_veth, &broker.dataplane_veth] {
            if interface_exists(veth) {
                return Err(taken("interface", veth));
            }
        }
    }
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    let prefix = layout.subnet.trim_end_matches("0/24");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let (Some(iface), Some(address)) = (fields.get(1), fields.get(3)) {
            if address.starts_with(prefix) {
                bail!(
                    "subnet {} is in use on this host ({iface} has {address}): give --subnet",
                    layout.subnet
                );
            }
        }
    }
    Ok(())
}

/// The bridge, and per broker its namespace and two veth pairs (see the module's picture).
pub(super) fn create_network(layout: &ClusterLayout) -> Result<()> {
    let bridge = layout.bridge.as_str();
    ip(&["link", "add", bridge, "type", "bridge"])?;
    ip(&[
        "addr",
        "add",
        &format!("{}/24", layout.host_address),
        "dev",
        bridge,
    ])?;
    ip(&["link", "set", bridge, "up"])?;
    for broker in &layout.brokers {
        let ns = broker.netns.as_str();
        ip(&["netns", "add", ns])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        for (host_end, inner) in [
            (&broker.kernel_veth, KERNEL_IFACE),
            (&broker.dataplane_veth, DATAPLANE_IFACE),
        ] {
            ip(&[
                "link", "add", host_end, "type", "veth", "peer", "name", inner, "netns", ns,
            ])?;
            // Bridge ports need no IPv6 of their own (their router solicitations and MLD
            // reports would reach every data plane).
            sysctl(None, &format!("net.ipv6.conf.{host_end}.disable_ipv6=1"));
            ip(&["link", "set", host_end, "master", bridge, "up"])?;
        }
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", broker.kernel_address),
            "dev",
            KERNEL_IFACE,
        ])?;
        ip(&["-n", ns, "link", "set", KERNEL_IFACE, "up"])?;
        // The data plane's veth is the data plane's alone: no kernel ARP (else the kernel
        // answers for the namespace's own address on it, and Kafka traffic arrives at the
        // data plane's MAC), no IPv6.
        sysctl(
            Some(ns),
            &format!("net.ipv6.conf.{DATAPLANE_IFACE}.disable_ipv6=1"),
        );
        sysctl(
            Some(ns),
            &format!("net.ipv4.conf.{DATAPLANE_IFACE}.arp_ignore=8"),
        );
        ip(&["-n", ns, "link", "set", DATAPLANE_IFACE, "arp", "off", "up"])?;
    }
    Ok(())
}

/// Sets a sysctl (in a namespace); a failure is a warning: the cluster works without it.
pub(super) fn sysctl(netns: Option<&str>, setting: &str) {
    let mut command = match netns {
        Some(ns) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", ns, "sysctl"]);
            command
        }
        None => Command::new("sysctl"),
    };
    let outcome = command.args(["-qw", setting]).output();
    let problem = match outcome {
        Ok(out) if out.status.success() => return,
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(error) => error.to_string(),
    };
    eprintln!("precursor: warning: sysctl {setting}: {problem}");
}

/// Removes what [`create_network`] made; what is not there is fine.
pub(super) fn delete_network(layout: &ClusterLayout) {
    for broker in &layout.brokers {
        delete_netns(&broker.netns);
        // Deleting the namespace destroys its veth ends, and their peers with them.
        for veth in [&broker.kernel_veth, &broker.dataplane_veth] {
            if interface_exists(veth) {
                let _ = ip(&["link", "del", veth]);
            }
        }
    }
    if interface_exists(&layout.bridge) {
        if let Err(error) = ip(&["link", "del", &layout.bridge]) {
            eprintln!("precursor: warning: {error}");
        }
    }
}

pub(super) fn delete_netns(name: &str) {
    let deadline = Instant::now() + Duration::from_millis(NETNS_DELETE_PATIENCE_MS);
    while netns_exists(name) {
        let outcome = ip(&["netns", "del", name]);
        if !netns_exists(name) {
            return;
        }
        if Instant::now() >= deadline {
            if let Err(error) = outcome {
                eprintln!("precursor: warning: network namespace {name} left behind: {error}");
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

/// Whether the interface's administrative state is up (`IFF_UP` in its flags); `None`
/// when there is no such interface.
pub(super) fn link_is_up(name: &str) -> Option<bool> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(name).join("flags"))
        .ok()
        .and_then(|flags| u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).ok())
        .map(|flags| flags & 1 != 0)
}
