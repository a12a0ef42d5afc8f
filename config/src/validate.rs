//! Range checks: every refusal names the key path and the reason.

use crate::{limits, Config, ConfigError, PortKind};

fn refuse(key: &str, value: impl std::fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::OutOfRange {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn check(
    ok: bool,
    key: &str,
    value: impl std::fmt::Display,
    reason: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(refuse(key, value, reason))
    }
}

impl Config {
    /// Checks every value's range. [`Config::load`] and [`Config::parse`] call it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let dp = &self.dataplane;
        check(
            !dp.file_prefix.is_empty() && !dp.file_prefix.contains('/'),
            "dataplane.file_prefix",
            format!("{:?}", dp.file_prefix),
            "a non-empty name without '/'",
        )?;
        check(
            dp.mbufs >= 1023 && dp.mbufs <= 1 << 20,
            "dataplane.mbufs",
            dp.mbufs,
            "between 1023 and 1048576",
        )?;
        check(
            dp.no_huge_memory_mb >= 64,
            "dataplane.no_huge_memory_mb",
            dp.no_huge_memory_mb,
            "at least 64",
        )?;
        check(
            (1..=1_000_000).contains(&dp.drain_interval_us),
            "dataplane.drain_interval_us",
            dp.drain_interval_us,
            "between 1 and 1000000",
        )?;
        check(
            dp.idle_park_us_max <= 1_000_000,
            "dataplane.idle_park_us_max",
            dp.idle_park_us_max,
            "at most 1000000",
        )?;
        check(
            (16..=1 << 20).contains(&dp.pending_acks_max),
            "dataplane.pending_acks_max",
            dp.pending_acks_max,
            "between 16 and 1048576",
        )?;
        if let Some(lcore) = dp.lcore {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            check(
                lcore < cores,
                "dataplane.lcore",
                lcore,
                &format!("a core of this machine (0..{cores})"),
            )?;
        }

        let ipc = &self.ipc;
        check(
            (1..=256).contains(&ipc.channels),
            "ipc.channels",
            ipc.channels,
            "between 1 and 256",
        )?;
        check(
            ipc.ring_bytes.is_power_of_two() && (1 << 16..=1 << 28).contains(&ipc.ring_bytes),
            "ipc.ring_bytes",
            ipc.ring_bytes,
            "a power of two between 65536 and 268435456",
        )?;
        check(
            (100..=3_600_000).contains(&ipc.client_timeout_ms),
            "ipc.client_timeout_ms",
            ipc.client_timeout_ms,
            "between 100 and 3600000",
        )?;

        let port = &self.port;
        check(
            (limits::MTU_BYTES_MIN..=limits::MTU_BYTES_MAX).contains(&port.mtu_bytes),
            "port.mtu_bytes",
            port.mtu_bytes,
            "between 576 and 9000",
        )?;
        check(
            port.udp_port != 0,
            "port.udp_port",
            port.udp_port,
            "a port number, not 0",
        )?;
        check(
            port.rx_descriptors.is_power_of_two() && port.rx_descriptors >= 64,
            "port.rx_descriptors",
            port.rx_descriptors,
            "a power of two, at least 64",
        )?;
        check(
            port.tx_descriptors.is_power_of_two() && port.tx_descriptors >= 64,
            "port.tx_descriptors",
            port.tx_descriptors,
            "a power of two, at least 64",
        )?;
        check(
            !port.address.is_unspecified()
                && !port.address.is_broadcast()
                && !port.address.is_multicast(),
            "port.address",
            port.address,
            "a unicast IPv4 address",
        )?;
        match port.kind {
            PortKind::Tap | PortKind::AfPacket => check(
                !port.iface.is_empty()
                    && port.iface.len() < 16
                    && !port.iface.contains(['/', ' ', ',']),
                "port.iface",
                format!("{:?}", port.iface),
                "an interface name of 1 to 15 characters",
            )?,
            PortKind::Pci => check(
                !port.pci_address.is_empty(),
                "port.pci_address",
                "\"\"",
                "a PCI address such as 0000:3b:02.1",
            )?,
            PortKind::Memif => check(
                port.memif_role == "server" || port.memif_role == "client",
                "port.memif_role",
                format!("{:?}", port.memif_role),
                "server or client",
            )?,
        }
        if port.kind == PortKind::Tap && !port.kernel_address.is_empty() {
            let valid = port
                .kernel_address
                .split_once('/')
                .is_some_and(|(ip, prefix)| {
                    ip.parse::<std::net::Ipv4Addr>().is_ok()
                        && prefix.parse::<u8>().is_ok_and(|p| (1..=32).contains(&p))
                });
            check(
                valid,
                "port.kernel_address",
                format!("{:?}", port.kernel_address),
                "an IPv4 address with prefix length, such as 10.77.0.1/24",
            )?;
        }

        let st = &self.storage;
        check(
            (limits::SEGMENT_BYTES_MIN..=limits::SEGMENT_BYTES_MAX).contains(&st.segment_bytes),
            "storage.segment_bytes",
            st.segment_bytes,
            "between 1 MiB and 1 GiB",
        )?;
        check(
            st.segment_bytes.is_multiple_of(2 << 20),
            "storage.segment_bytes",
            st.segment_bytes,
            "a multiple of 2 MiB (the huge page size)",
        )?;
        check(
            st.segment_ms >= 1000,
            "storage.segment_ms",
            st.segment_ms,
            "at least 1000",
        )?;
        check(
            (512..=1 << 20).contains(&st.index_interval_bytes),
            "storage.index_interval_bytes",
            st.index_interval_bytes,
            "between 512 and 1048576",
        )?;
        check(
            st.retention_bytes == 0 || st.retention_bytes >= st.segment_bytes,
            "storage.retention_bytes",
            st.retention_bytes,
            "0 (no limit) or at least storage.segment_bytes",
        )?;
        check(
            (1..=3_600_000).contains(&st.flush_interval_ms),
            "storage.flush_interval_ms",
            st.flush_interval_ms,
            "between 1 and 3600000",
        )?;
        check(
            st.flush_messages >= 1,
            "storage.flush_messages",
            st.flush_messages,
            "at least 1",
        )?;
        check(
            (1024..=limits::BATCH_BYTES_MAX).contains(&st.batch_bytes_max),
            "storage.batch_bytes_max",
            st.batch_bytes_max,
            "between 1024 and 67108864",
        )?;
        check(
            (st.batch_bytes_max as u64) < st.segment_bytes,
            "storage.batch_bytes_max",
            st.batch_bytes_max,
            "smaller than storage.segment_bytes",
        )?;
        check(
            (1..=65536).contains(&st.producers_per_partition_max),
            "storage.producers_per_partition_max",
            st.producers_per_partition_max,
            "between 1 and 65536",
        )?;

        let cp = &self.controlplane;
        check(
            cp.metrics_listen.parse::<std::net::SocketAddr>().is_ok(),
            "controlplane.metrics_listen",
            format!("{:?}", cp.metrics_listen),
            "an address:port such as 127.0.0.1:9464",
        )?;
        check(
            !cp.admin_socket.as_os_str().is_empty() && cp.admin_socket.as_os_str().len() < 108,
            "controlplane.admin_socket",
            format!("{:?}", cp.admin_socket.display().to_string()),
            "a Unix socket path shorter than 108 bytes",
        )?;
        check(
            (1..=cp.restart_backoff_ms_max).contains(&cp.restart_backoff_ms),
            "controlplane.restart_backoff_ms",
            cp.restart_backoff_ms,
            "between 1 and controlplane.restart_backoff_ms_max",
        )?;
        check(
            (1..=600_000).contains(&cp.command_timeout_ms),
            "controlplane.command_timeout_ms",
            cp.command_timeout_ms,
            "between 1 and 600000",
        )?;
        check(
            cp.cluster_listen.is_empty()
                || cp.cluster_listen.parse::<std::net::SocketAddr>().is_ok(),
            "controlplane.cluster_listen",
            format!("{:?}", cp.cluster_listen),
            "empty, or an address:port such as 10.79.0.11:9290",
        )?;

        let gw = &self.gateway;
        check(
            gw.listen.parse::<std::net::SocketAddr>().is_ok(),
            "gateway.listen",
            format!("{:?}", gw.listen),
            "an address:port such as 0.0.0.0:9092",
        )?;
        if !gw.advertised_listener.is_empty() {
            let valid = gw
                .advertised_listener
                .rsplit_once(':')
                .is_some_and(|(host, port)| {
                    !host.is_empty()
                        && !host.contains(char::is_whitespace)
                        && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
            check(
                valid,
                "gateway.advertised_listener",
                format!("{:?}", gw.advertised_listener),
                "empty, or host:port such as broker1.example:9092",
            )?;
        }
        self.validate_listeners()?;
        check(
            (1..=1_000_000).contains(&gw.sasl_failures_max),
            "gateway.sasl_failures_max",
            gw.sasl_failures_max,
            "between 1 and 1000000",
        )?;
        for (key, value) in [
            ("gateway.sasl_failure_window_ms", gw.sasl_failure_window_ms),
            ("gateway.sasl_lockout_ms", gw.sasl_lockout_ms),
        ] {
            check(
                (1..=86_400_000).contains(&value),
                key,
                value,
                "between 1 and 86400000 (a day)",
            )?;
        }
        check(
            gw.sasl_lockout_delay_ms <= 60_000,
            "gateway.sasl_lockout_delay_ms",
            gw.sasl_lockout_delay_ms,
            "at most 60000",
        )?;
        for (i, principal) in gw.super_users.iter().enumerate() {
            check(
                principal
                    .strip_prefix("User:")
                    .is_some_and(|n| !n.is_empty()),
                &format!("gateway.super_users[{i}]"),
                format!("{principal:?}"),
                "a principal such as \"User:admin\"",
            )?;
        }
        check(
            gw.broker_id >= 0,
            "gateway.broker_id",
            gw.broker_id,
            "at least 0",
        )?;
        check(
            (1..=1_000_000).contains(&gw.connections_max),
            "gateway.connections_max",
            gw.connections_max,
            "between 1 and 1000000",
        )?;
        check(
            (64 << 10..=1 << 30).contains(&gw.request_bytes_max)
                && gw.request_bytes_max > self.storage.batch_bytes_max,
            "gateway.request_bytes_max",
            gw.request_bytes_max,
            "between 64 KiB and 1 GiB, and larger than storage.batch_bytes_max",
        )?;
        check(
            (1..=4096).contains(&gw.connection_requests_in_flight_max),
            "gateway.connection_requests_in_flight_max",
            gw.connection_requests_in_flight_max,
            "between 1 and 4096",
        )?;
        check(
            gw.connection_idle_timeout_ms >= 1000,
            "gateway.connection_idle_timeout_ms",
            gw.connection_idle_timeout_ms,
            "at least 1000",
        )?;
        check(
            gw.fetch_wait_ms_max <= 600_000,
            "gateway.fetch_wait_ms_max",
            gw.fetch_wait_ms_max,
            "at most 600000",
        )?;
        check(
            gw.fetch_response_bytes_max >= self.storage.batch_bytes_max
                && gw.fetch_response_bytes_max <= 1 << 30,
            "gateway.fetch_response_bytes_max",
            gw.fetch_response_bytes_max,
            "at least storage.batch_bytes_max (one batch must fit) and at most 1 GiB",
        )?;
        check(
            (10..=1_000_000).contains(&gw.fetch_poll_interval_us),
            "gateway.fetch_poll_interval_us",
            gw.fetch_poll_interval_us,
            "between 10 and 1000000",
        )?;
        check(
            (1..=gw.group_session_timeout_ms_max).contains(&gw.group_session_timeout_ms_min),
            "gateway.group_session_timeout_ms_min",
            gw.group_session_timeout_ms_min,
            "between 1 and gateway.group_session_timeout_ms_max",
        )?;
        check(
            gw.group_session_timeout_ms_max <= 3_600_000,
            "gateway.group_session_timeout_ms_max",
            gw.group_session_timeout_ms_max,
            "at most 3600000",
        )?;
        check(
            gw.group_initial_rebalance_delay_ms <= 300_000,
            "gateway.group_initial_rebalance_delay_ms",
            gw.group_initial_rebalance_delay_ms,
            "at most 300000",
        )?;
        check(
            (1..=100_000).contains(&gw.group_members_max),
            "gateway.group_members_max",
            gw.group_members_max,
            "between 1 and 100000",
        )?;
        check(
            gw.offset_metadata_bytes_max <= 1 << 20,
            "gateway.offset_metadata_bytes_max",
            gw.offset_metadata_bytes_max,
            "at most 1048576",
        )?;

        let rdma = &self.rdma;
        check(
            !rdma.address.is_broadcast() && !rdma.address.is_multicast(),
            "rdma.address",
            rdma.address,
            "a unicast IPv4 address of the RDMA device's interface",
        )?;
        check(
            rdma.port != 0,
            "rdma.port",
            rdma.port,
            "a port number, not 0",
        )?;
        check(
            (1..=limits::RDMA_RECV_BUFFERS_PER_CONNECTION_MAX)
                .contains(&rdma.recv_buffers_per_connection),
            "rdma.recv_buffers_per_connection",
            rdma.recv_buffers_per_connection,
            "between 1 and 4096",
        )?;
        check(
            (1..=limits::RDMA_CONNECTIONS_MAX).contains(&rdma.connections_max),
            "rdma.connections_max",
            rdma.connections_max,
            "between 1 and 1024",
        )?;
        let frame_bytes = u32::from(port.mtu_bytes) - 28;
        check(
            rdma.buffer_bytes.is_multiple_of(64)
                && rdma.buffer_bytes >= frame_bytes
                && rdma.buffer_bytes <= limits::RDMA_BUFFER_BYTES_MAX,
            "rdma.buffer_bytes",
            rdma.buffer_bytes,
            &format!(
                "a multiple of 64 between the port's frame size ({frame_bytes} = port.mtu_bytes - 28) and 1048576"
            ),
        )?;

        let topics = &self.topics;
        check(
            (1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&topics.default_partitions),
            "topics.default_partitions",
            topics.default_partitions,
            "between 1 and 1024",
        )?;
        check(
            topics.create.len() <= limits::TOPICS_MAX,
            "topics.create",
            topics.create.len(),
            "at most 4096 topics",
        )?;
        self.check_replication_factor(
            "topics.default_replication_factor",
            topics.default_replication_factor,
        )?;
        check(
            (1..=topics.default_replication_factor).contains(&topics.default_min_insync_replicas),
            "topics.default_min_insync_replicas",
            topics.default_min_insync_replicas,
            "between 1 and topics.default_replication_factor",
        )?;
        self.validate_cluster()?;
        for (i, spec) in topics.create.iter().enumerate() {
            check(
                precursor_topic_name_valid(&spec.name),
                &format!("topics.create[{i}].name"),
                format!("{:?}", spec.name),
                "1 to 249 characters of [a-zA-Z0-9._-], not . or ..",
            )?;
            check(
                (1..=limits::PARTITIONS_PER_TOPIC_MAX).contains(&spec.partitions),
                &format!("topics.create[{i}].partitions"),
                spec.partitions,
                "between 1 and 1024",
            )?;
            let key = |field: &str| format!("topics.create[{i}].{field}");
            if let Some(rf) = spec.replication_factor {
                self.check_replication_factor(&key("replication_factor"), rf)?;
            }
            let rf = spec
                .replication_factor
                .unwrap_or(topics.default_replication_factor);
            if let Some(min) = spec.min_insync_replicas {
                check(
                    (1..=rf).contains(&min),
                    &key("min_insync_replicas"),
                    min,
                    "between 1 and the topic's replication factor",
                )?;
            }
            if !spec.replicas.is_empty() {
                check(
                    spec.replicas.len() == spec.partitions as usize,
                    &key("replicas"),
                    spec.replicas.len(),
                    "one list of broker ids per partition",
                )?;
                for (p, replicas) in spec.replicas.iter().enumerate() {
                    let mut sorted = replicas.clone();
                    sorted.sort_unstable();
                    sorted.dedup();
                    check(
                        replicas.len() == rf as usize
                            && sorted.len() == replicas.len()
                            && replicas.iter().all(|id| self.cluster.broker(*id).is_some()),
                        &format!("topics.create[{i}].replicas[{p}]"),
                        format!("{replicas:?}"),
                        "replication_factor distinct ids of cluster.brokers",
                    )?;
                }
            }
            if topics.create[..i]
                .iter()
                .any(|other| other.name == spec.name)
            {
                return Err(refuse(
                    &format!("topics.create[{i}].name"),
                    format!("{:?}", spec.name),
                    "named twice",
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    fn check_replication_factor(&self, key: &str, rf: u8) -> Result<(), ConfigError> {
        let brokers = self.cluster.brokers.len().max(1);
        check(
            (1..=crate::REPLICATION_FACTOR_MAX).contains(&rf) && rf as usize <= brokers,
            key,
            rf,
            &format!(
                "between 1 and {} (the cluster's brokers: {brokers}; at most {})",
                brokers.min(crate::REPLICATION_FACTOR_MAX as usize),
                crate::REPLICATION_FACTOR_MAX
            ),
        )
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut addresses = std::collections::BTreeSet::new();
        addresses.insert(self.gateway.listen.clone());
        for (i, listener) in self.gateway.listeners.iter().enumerate() {
            let key = |field: &str| format!("gateway.listeners[{i}].{field}");
            check(
                !listener.name.is_empty() && names.insert(listener.name.clone()),
                &key("name"),
                format!("{:?}", listener.name),
                "a name, unique among the listeners",
            )?;
            check(
                listener.address.parse::<std::net::SocketAddr>().is_ok(),
                &key("address"),
                format!("{:?}", listener.address),
                "an address:port such as 0.0.0.0:9093",
            )?;
            check(
                addresses.insert(listener.address.clone()),
                &key("address"),
                format!("{:?}", listener.address),
                "another listener (or gateway.listen) has this address",
            )?;
            if listener.protocol.sasl() {
                check(
                    !listener.sasl_mechanisms.is_empty(),
                    &key("sasl_mechanisms"),
                    "[]",
                    "at least one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 on a SASL listener",
                )?;
                let distinct: std::collections::BTreeSet<_> =
                    listener.sasl_mechanisms.iter().map(|m| m.name()).collect();
                check(
                    distinct.len() == listener.sasl_mechanisms.len(),
                    &key("sasl_mechanisms"),
                    format!("{:?}", listener.sasl_mechanisms),
                    "each mechanism once",
                )?;
            } else {
                check(
                    listener.sasl_mechanisms.is_empty() && listener.connections_max_reauth_ms == 0,
                    &key("protocol"),
                    listener.protocol.name(),
                    "SASL settings (sasl_mechanisms, connections_max_reauth_ms) need \
                     SASL_PLAINTEXT or SASL_SSL",
                )?;
            }
            check(
                listener.connections_max_reauth_ms == 0
                    || (1_000..=i64::MAX as u64).contains(&listener.connections_max_reauth_ms),
                &key("connections_max_reauth_ms"),
                listener.connections_max_reauth_ms,
                "0 (no re-authentication) or at least 1000",
            )?;
            if listener.protocol.tls() {
                for (field, path) in [
                    ("cert_file", &listener.cert_file),
                    ("key_file", &listener.key_file),
                ] {
                    check(
                        !path.as_os_str().is_empty(),
                        &key(field),
                        format!("{:?}", path.display().to_string()),
                        "a PEM file, required on an SSL listener",
                    )?;
                }
                check(
                    listener.client_auth == crate::ClientAuth::None
                        || !listener.client_ca_file.as_os_str().is_empty(),
                    &key("client_ca_file"),
                    "\"\"",
                    "a PEM file of CAs, required when client_auth is requested or required",
                )?;
            } else {
                check(
                    listener.cert_file.as_os_str().is_empty()
                        && listener.key_file.as_os_str().is_empty()
                        && listener.client_ca_file.as_os_str().is_empty()
                        && listener.client_auth == crate::ClientAuth::None,
                    &key("protocol"),
                    listener.protocol.name(),
                    "TLS settings (cert_file, key_file, client_ca_file, client_auth) need SSL",
                )?;
            }
            if !listener.advertised.is_empty() {
                check(
                    listener
                        .advertised
                        .rsplit_once(':')
                        .is_some_and(|(host, port)| {
                            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                        }),
                    &key("advertised"),
                    format!("{:?}", listener.advertised),
                    "empty, or host:port such as broker1.example:9093",
                )?;
            }
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        if !cluster.enabled() {
            return check(
                cluster.brokers.is_empty(),
                "cluster.brokers",
                cluster.brokers.len(),
                "empty unless cluster.broker_id names this broker (1..=64)",
            );
        }
        check(
            (1..=crate::BROKERS_MAX as u32).contains(&cluster.broker_id),
            "cluster.broker_id",
            cluster.broker_id,
            "between 1 and 64 (0: not a cluster)",
        )?;
        check(
            cluster.brokers.len() <= crate::BROKERS_MAX,
            "cluster.brokers",
            cluster.brokers.len(),
            "at most 64 brokers",
        )?;
        for (i, broker) in cluster.brokers.iter().enumerate() {
            let key = |field: &str| format!("cluster.brokers[{i}].{field}");
            check(
                (1..=crate::BROKERS_MAX as u32).contains(&broker.id),
                &key("id"),
                broker.id,
                "between 1 and 64",
            )?;
            let twice = cluster.brokers[..i].iter().any(|b| {
                b.id == broker.id || (b.address, b.udp_port) == (broker.address, broker.udp_port)
            });
            check(
                !twice,
                &key("id"),
                broker.id,
                "id or address:udp_port named twice",
            )?;
            for (field, value) in [("kafka", &broker.kafka), ("admin", &broker.admin)] {
                check(
                    value.is_empty()
                        || value
                            .rsplit_once(':')
                            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
                    &key(field),
                    format!("{value:?}"),
                    "host:port, or empty",
                )?;
            }
        }
        let me = cluster.me().ok_or_else(|| {
            refuse(
                "cluster.broker_id",
                cluster.broker_id,
                "not one of cluster.brokers",
            )
        })?;
        check(
            me.address == self.port.address && me.udp_port == self.port.udp_port,
            "cluster.brokers",
            format!("{}:{}", me.address, me.udp_port),
            &format!(
                "this broker's entry must match port.address:port.udp_port ({}:{})",
                self.port.address, self.port.udp_port
            ),
        )?;
        let gateway = &self.gateway;
        check(
            gateway.broker_id == 0 || i64::from(gateway.broker_id) == i64::from(cluster.broker_id),
            "gateway.broker_id",
            gateway.broker_id,
            &format!(
                "0 or cluster.broker_id ({}): in a cluster the gateway is known by the \
                 broker's id",
                cluster.broker_id
            ),
        )?;
        check(
            gateway.advertised_listener.is_empty()
                || me.kafka.is_empty()
                || gateway.advertised_listener == me.kafka,
            "gateway.advertised_listener",
            format!("{:?}", gateway.advertised_listener),
            &format!(
                "empty, or this broker's cluster.brokers kafka ({:?}): every broker tells \
                 clients the same address for it",
                me.kafka
            ),
        )?;
        check(
            (10..=600_000).contains(&cluster.replica_lag_ms),
            "cluster.replica_lag_ms",
            cluster.replica_lag_ms,
            "between 10 and 600000",
        )?;
        check(
            (1..=60_000).contains(&cluster.replica_fetch_wait_ms),
            "cluster.replica_fetch_wait_ms",
            cluster.replica_fetch_wait_ms,
            "between 1 and 60000",
        )?;
        check(
            (1..=60_000).contains(&cluster.replica_fetch_retry_ms),
            "cluster.replica_fetch_retry_ms",
            cluster.replica_fetch_retry_ms,
            "between 1 and 60000",
        )?;
        if cluster.metadata != crate::MetadataMode::Quorum {
            return Ok(());
        }
        for (i, broker) in cluster.brokers.iter().enumerate() {
            check(
                broker.quorum.parse::<std::net::SocketAddr>().is_ok(),
                &format!("cluster.brokers[{i}].quorum"),
                format!("{:?}", broker.quorum),
                "host:port of its metadata quorum listener (IP address): with \
                 metadata = \"quorum\" every broker is a voter",
            )?;
        }
        check(
            [1, 3, 5].contains(&cluster.brokers.len()),
            "cluster.brokers",
            cluster.brokers.len(),
            "1, 3 or 5 brokers with metadata = \"quorum\" (an odd number of voters)",
        )?;
        let t = &cluster.quorum;
        check(
            (1..=10_000).contains(&t.raft_heartbeat_ms),
            "cluster.quorum.raft_heartbeat_ms",
            t.raft_heartbeat_ms,
            "between 1 and 10000",
        )?;
        check(
            t.raft_election_timeout_min_ms > t.raft_heartbeat_ms
                && t.raft_election_timeout_max_ms > t.raft_election_timeout_min_ms
                && t.raft_election_timeout_max_ms <= 60_000,
            "cluster.quorum.raft_election_timeout_min_ms",
            t.raft_election_timeout_min_ms,
            "above raft_heartbeat_ms, below raft_election_timeout_max_ms (at most 60000)",
        )?;
        check(
            (1..=10_000).contains(&t.broker_heartbeat_ms),
            "cluster.quorum.broker_heartbeat_ms",
            t.broker_heartbeat_ms,
            "between 1 and 10000",
        )?;
        check(
            t.lease_margin_ms >= 1 && t.lease_margin_ms < t.broker_session_ms,
            "cluster.quorum.lease_margin_ms",
            t.lease_margin_ms,
            "at least 1 and below broker_session_ms",
        )?;
        check(
            t.broker_session_ms >= 2 * t.broker_heartbeat_ms
                && t.broker_session_ms - t.lease_margin_ms > t.broker_heartbeat_ms
                && t.broker_session_ms <= 600_000,
            "cluster.quorum.broker_session_ms",
            t.broker_session_ms,
            "at least two broker heartbeats, a heartbeat longer than the lease \
             (broker_session_ms - lease_margin_ms), at most 600000",
        )
    }
}

/// Kafka's topic name rule (the protocol crate holds the same rule for the wire; config
/// depends on nothing of ours, DESIGN.md §2).
fn precursor_topic_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}
