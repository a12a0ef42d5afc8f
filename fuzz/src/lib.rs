//! What the fuzz targets share: a real [`Service`] over real partition logs (a data
//! directory in a temporary directory, segment memory in /dev/shm, the flusher thread), and
//! the builders of well-formed frames that the structure-aware targets mutate.
//!
//! No DPDK port is involved: the service is what every transport hands its frames to
//! (`Service::serve_frame`), so the bytes a hostile UDP peer, IPC client or RDMA peer
//! sends reach exactly this code.

use precursor_dataplane::log::{Flusher, FlusherHandle, LogConfig};
use precursor_dataplane::service::{
    DueAnswer, Reply, ReplyTo, Service, ServiceConfig, DUE_ANSWERS_MAX,
};
use precursor_dataplane::topics::{
    spawn_admin, AdminLink, Manifest, ReplicationPolicy, Topic, TopicTable,
};
use precursor_protocol::frame::{FrameHeader, FRAME_HEADER_BYTES};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The topic every fixture holds.
pub const FUZZ_TOPIC: &str = "fuzz";
/// Its partitions.
pub const FUZZ_PARTITIONS: u16 = 2;
/// Segments roll often (many rolls per run), and retention keeps a long run's disk use
/// bounded.
pub const FUZZ_SEGMENT_BYTES: u64 = 64 * 1024;
pub const FUZZ_RETENTION_BYTES: u64 = 4 * FUZZ_SEGMENT_BYTES;
/// Durable answers parked at most (small: the fuzzer reaches the Busy answer too).
pub const FUZZ_PENDING_ACKS_MAX: usize = 64;

/// A service over one topic of [`FUZZ_PARTITIONS`] real partition logs.
pub struct ServiceFixture {
    pub service: Service,
    /// Every answer the service rendered is checked against this (the transport's room).
    pub frame_bytes_max: usize,
    render_buffer: Vec<u8>,
    due: [Option<DueAnswer>; DUE_ANSWERS_MAX],
    /// Kept alive: the flusher and admin threads run until the process ends.
    _flusher: FlusherHandle,
    _stop: Arc<AtomicBool>,
    _data_dir: tempfile::TempDir,
    _memory_dir: tempfile::TempDir,
}

impl ServiceFixture {
    /// Builds the fixture (start-up: files, threads). Panics when the host cannot (no
    /// /dev/shm): a fuzz run without its subject is no run.
    pub fn new(frame_bytes_max: usize) -> ServiceFixture {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let memory_dir = tempfile::tempdir_in("/dev/shm").expect("temporary /dev/shm directory");
        let mut log = LogConfig::new(data_dir.path().to_path_buf());
        log.memory_dir = memory_dir.path().to_path_buf();
        log.small_page_dir = Some(memory_dir.path().to_path_buf());
        log.segment_bytes = FUZZ_SEGMENT_BYTES;
        log.index_interval_bytes = 1024;
        log.retention_bytes = Some(FUZZ_RETENTION_BYTES);
        log.retention_ms = None;
        log.flush_interval_ms = 1;
        log.batch_bytes_max = frame_bytes_max as u32;
        log.producers_per_partition_max = 8;
        log.validate().expect("fuzz log configuration");
        let (flusher, _flusher_thread) = Flusher::spawn(&log).expect("flusher thread");
        let mut manifest = Manifest::load(data_dir.path()).expect("empty manifest");
        let entry = manifest
            .add(FUZZ_TOPIC, FUZZ_PARTITIONS)
            .expect("topic in the manifest");
        let policy = ReplicationPolicy::default();
        let topic = Topic::open(&entry, &log, &flusher, &policy).expect("topic opens");
        let mut topics = TopicTable::new();
        topics.install(topic, FUZZ_TOPIC.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let (admin, _admin_thread): (AdminLink, _) =
            spawn_admin(manifest, log, flusher.clone(), policy, Arc::clone(&stop))
                .expect("admin thread");
        let service = Service::new(
            ServiceConfig {
                pending_acks_max: FUZZ_PENDING_ACKS_MAX,
                // Off: auto-created topics would pile up on disk over a long run.
                auto_create_topics: false,
                default_partitions: 1,
                frame_bytes_max,
            },
            topics,
            admin,
        );
        ServiceFixture {
            service,
            frame_bytes_max,
            render_buffer: vec![0u8; frame_bytes_max],
            due: [None; DUE_ANSWERS_MAX],
            _flusher: flusher,
            _stop: stop,
            _data_dir: data_dir,
            _memory_dir: memory_dir,
        }
    }

    /// Serves one frame as a transport does, renders its answer into a buffer of exactly
    /// the room the transport reserves, and checks what every answer must satisfy.
    pub fn serve(&mut self, reply_to: ReplyTo, frame: &[u8], now_ms: i64) -> Option<FrameHeader> {
        let (request, reply) =
            self.service
                .serve_frame(reply_to, frame, self.frame_bytes_max, now_ms)?;
        self.render(reply, &request)
    }

    /// Renders `reply` as a transport would; returns the answer's header.
    pub fn render(&mut self, reply: Reply, request: &FrameHeader) -> Option<FrameHeader> {
        if reply == Reply::Nothing {
            assert!(self.service.render(reply, request, &mut []).is_none());
            return None;
        }
        let room = reply.payload_bytes_max(self.frame_bytes_max);
        assert!(
            FRAME_HEADER_BYTES + room <= self.frame_bytes_max,
            "an answer's reserved room exceeds the transport's frame: {reply:?}"
        );
        let out = &mut self.render_buffer[..room];
        let header = self
            .service
            .render(reply, request, out)
            .expect("a reply other than Nothing renders a frame");
        assert!(
            header.length as usize <= room,
            "rendered {} bytes into a room of {room}",
            header.length
        );
        assert_eq!(
            header.request_id, request.request_id,
            "answer to another request"
        );
        Some(header)
    }

    /// The lcore's drain tick: partitions maintained (rolls, retention, flusher hand-offs)
    /// and the durable answers that are due rendered.
    pub fn drain(&mut self, now_ms: i64) {
        self.service.topics.for_each_mut(|topic| {
            for log in &mut topic.partitions {
                log.maintain(now_ms);
            }
        });
        let due_count = self.service.due_answers(&mut self.due);
        assert!(due_count <= DUE_ANSWERS_MAX);
        for index in 0..due_count {
            let due = self.due[index].take().expect("due answers are packed");
            self.render(due.reply, &due.request);
        }
    }
}
