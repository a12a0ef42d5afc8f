use precursor_config::{Config, ConfigError, IdleStrategy, PortKind, Preset};

fn refusal(text: &str) -> String {
    match Config::parse(text) {
        Ok(_) => panic!("config was accepted: {text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn embedded_default_is_valid_and_is_a_tap_port() {
    let config = Config::default();
    config.validate().expect("default validates");
    assert_eq!(config.preset, Preset::Balanced);
    assert_eq!(config.port.kind, PortKind::Tap);
    assert_eq!(config.port.iface, "prc0");
    assert_eq!(Config::parse("").unwrap(), config);
}

#[test]
fn every_preset_validates_and_differs() {
    let balanced = Config::preset(Preset::Balanced);
    let high = Config::preset(Preset::High);
    let maximum = Config::preset(Preset::Maximum);
    for c in [&balanced, &high, &maximum] {
        c.validate().unwrap();
    }
    assert_eq!(balanced.dataplane.idle, IdleStrategy::Backoff);
    assert_eq!(high.dataplane.idle, IdleStrategy::Yield);
    assert_eq!(maximum.dataplane.idle, IdleStrategy::Spin);
}

#[test]
fn file_values_lay_over_the_named_preset() {
    let config = Config::parse(
        "preset = \"maximum\"\n[storage]\nsegment_bytes = 4194304\n[[topics.create]]\nname = \"orders\"\npartitions = 3\n",
    )
    .unwrap();
    assert_eq!(config.dataplane.idle, IdleStrategy::Spin, "from the preset");
    assert_eq!(config.storage.segment_bytes, 4 << 20, "from the file");
    assert_eq!(config.storage.flush_interval_ms, 10, "preset value kept");
    assert_eq!(config.topics.create[0].name, "orders");
}

#[test]
fn show_output_parses_back_to_the_same_config() {
    for preset in [Preset::Balanced, Preset::High, Preset::Maximum] {
        let config = Config::preset(preset);
        assert_eq!(Config::parse(&config.to_toml()).unwrap(), config);
    }
}

#[test]
fn the_example_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/precursor.toml");
    Config::load(std::path::Path::new(path)).expect("example validates");
}

#[test]
fn the_cluster_example_is_valid_and_names_three_brokers() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/cluster-broker-1.toml"
    );
    let config = Config::load(std::path::Path::new(path)).expect("example validates");
    assert_eq!(config.cluster.broker_id, 1);
    assert_eq!(config.cluster.brokers.len(), 3);
    assert_eq!(
        config.controlplane.cluster_listen,
        config.cluster.me().unwrap().admin
    );
    assert_eq!(config.cluster.replicas_for("orders", 0, 3).len(), 3);
}

#[test]
fn a_cluster_listener_must_be_an_address() {
    let message = refusal("[controlplane]\ncluster_listen = \"broker1:9290\"\n");
    assert!(message.contains("controlplane.cluster_listen"), "{message}");
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let message = refusal("[storage]\nsegment_byte = 1\n");
    assert!(message.contains("segment_byte"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    let message = refusal("[nosuchtable]\nx = 1\n");
    assert!(message.contains("nosuchtable"), "{message}");
}

#[test]
fn wrong_types_and_syntax_are_refused() {
    assert!(refusal("[port]\nudp_port = \"x\"\n").contains("udp_port"));
    assert!(refusal("[port\n").contains("line 1"));
    assert!(refusal("[port]\nkind = \"carrier-pigeon\"\n").contains("carrier-pigeon"));
    let message = refusal("preset = \"turbo\"");
    assert!(
        message.contains("turbo") && message.contains("balanced"),
        "{message}"
    );
}

#[test]
fn out_of_range_values_name_the_key_and_reason() {
    let cases = [
        ("[storage]\nsegment_bytes = 1000", "storage.segment_bytes", "between 1 MiB and 1 GiB"),
        ("[storage]\nsegment_bytes = 3145728", "storage.segment_bytes", "multiple of 2 MiB"),
        ("[storage]\nflush_interval_ms = 0", "storage.flush_interval_ms", "between 1"),
        ("[storage]\nbatch_bytes_max = 100", "storage.batch_bytes_max", "between 1024"),
        ("[port]\nmtu_bytes = 20000", "port.mtu_bytes", "between 576 and 9000"),
        ("[port]\nudp_port = 0", "port.udp_port", "not 0"),
        ("[port]\nrx_descriptors = 1000", "port.rx_descriptors", "power of two"),
        ("[port]\naddress = \"0.0.0.0\"", "port.address", "unicast"),
        ("[port]\nkernel_address = \"10.0.0.1\"", "port.kernel_address", "prefix length"),
        ("[port]\nkind = \"pci\"", "port.pci_address", "PCI address"),
        ("[port]\niface = \"a-very-long-interface-name\"", "port.iface", "1 to 15"),
        ("[dataplane]\nmbufs = 10", "dataplane.mbufs", "between 1023"),
        ("[dataplane]\nlcore = 4096", "dataplane.lcore", "a core of this machine"),
        ("[controlplane]\nmetrics_listen = \"nowhere\"", "controlplane.metrics_listen", "address:port"),
        ("[controlplane]\nrestart_backoff_ms = 0", "controlplane.restart_backoff_ms", "between 1"),
        ("[controlplane]\ncommand_timeout_ms = 0", "controlplane.command_timeout_ms", "between 1"),
        ("[gateway]\nlisten = \"9092\"", "gateway.listen", "address:port"),
        ("[gateway]\nadvertised_listener = \"broker\"", "gateway.advertised_listener", "host:port"),
        ("[gateway]\nadvertised_listener = \"broker:0\"", "gateway.advertised_listener", "host:port"),
        ("[gateway]\nrequest_bytes_max = 1000", "gateway.request_bytes_max", "between 64 KiB"),
        ("[gateway]\nfetch_poll_interval_us = 0", "gateway.fetch_poll_interval_us", "between 10"),
        ("[gateway]\ngroup_session_timeout_ms_min = 5000\ngroup_session_timeout_ms_max = 4000", "gateway.group_session_timeout_ms_min", "between 1 and"),
        ("[gateway]\nbroker_id = -1", "gateway.broker_id", "at least 0"),
        ("[topics]\ndefault_partitions = 0", "topics.default_partitions", "between 1 and 1024"),
        ("[[topics.create]]\nname = \"bad/name\"\npartitions = 1", "topics.create[0].name", "[a-zA-Z0-9._-]"),
        ("[[topics.create]]\nname = \"t\"\npartitions = 5000", "topics.create[0].partitions", "between 1 and 1024"),
        ("[[topics.create]]\nname = \"t\"\npartitions = 1\n[[topics.create]]\nname = \"t\"\npartitions = 2", "topics.create[1].name", "named twice"),
    ];
    for (text, key, reason) in cases {
        let message = refusal(text);
        assert!(
            message.contains(&format!("`{key}`")),
            "{text:?} -> {message}"
        );
        assert!(message.contains(reason), "{text:?} -> {message}");
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let error = Config::load(std::path::Path::new("/nonexistent/precursor.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("/nonexistent/precursor.toml"));
}

#[test]
fn rdma_section_defaults_off_and_checks_its_ranges() {
    let config = Config::default();
    assert!(!config.rdma.enabled);
    assert!(config.rdma.buffer_bytes as usize >= config.port.mtu_bytes as usize - 28);
    let on = Config::parse("[rdma]\nenabled = true\naddress = \"10.0.0.1\"\nport = 7000").unwrap();
    assert!(on.rdma.enabled);
    assert_eq!(on.rdma.port, 7000);
    let cases = [
        ("[rdma]\nport = 0", "rdma.port", "not 0"),
        (
            "[rdma]\naddress = \"255.255.255.255\"",
            "rdma.address",
            "unicast",
        ),
        (
            "[rdma]\nrecv_buffers_per_connection = 0",
            "rdma.recv_buffers_per_connection",
            "between 1 and 4096",
        ),
        (
            "[rdma]\nconnections_max = 5000",
            "rdma.connections_max",
            "between 1 and 1024",
        ),
        (
            "[rdma]\nbuffer_bytes = 1000",
            "rdma.buffer_bytes",
            "multiple of 64",
        ),
        (
            "[port]\nmtu_bytes = 9000\n[rdma]\nbuffer_bytes = 4096",
            "rdma.buffer_bytes",
            "8972",
        ),
        ("[rdma]\nbogus = 1", "bogus", "unknown field"),
    ];
    for (text, key, reason) in cases {
        let message = refusal(text);
        assert!(message.contains(key), "{text:?} -> {message}");
        assert!(message.contains(reason), "{text:?} -> {message}");
    }
}

#[test]
fn a_cluster_gateway_is_known_by_the_broker_id_and_its_kafka_listener() {
    let cluster = "[port]\naddress = \"10.79.0.21\"\nudp_port = 9190\n\
                   [cluster]\nbroker_id = 1\n\
                   [[cluster.brokers]]\nid = 1\naddress = \"10.79.0.21\"\nkafka = \"b1:9092\"\n\
                   [[cluster.brokers]]\nid = 2\naddress = \"10.79.0.22\"\nkafka = \"b2:9092\"\n";
    let config = Config::parse(cluster).expect("a cluster config validates");
    assert_eq!(config.gateway.broker_id, 0);
    Config::parse(&format!(
        "{cluster}[gateway]\nbroker_id = 1\nadvertised_listener = \"b1:9092\"\n"
    ))
    .expect("the same id and listener are allowed");
    let message = refusal(&format!("{cluster}[gateway]\nbroker_id = 2\n"));
    assert!(
        message.contains("`gateway.broker_id`") && message.contains("cluster.broker_id (1)"),
        "{message}"
    );
    let message = refusal(&format!(
        "{cluster}[gateway]\nadvertised_listener = \"other:9092\"\n"
    ));
    assert!(
        message.contains("`gateway.advertised_listener`") && message.contains("\"b1:9092\""),
        "{message}"
    );
}
