//! Kafka requests as the gateway reads them (`gateway::decode_request`, the whole of what a
//! client's bytes reach before a handler runs): the request header, the version check
//! against what ApiVersions advertises, and the body of every API key at every advertised
//! version. Structure-aware: the fuzzer picks an advertised (API, version) so that the
//! body decoders, not the version check, get the mutations; raw frames cover the rest.
//!
//! Checked: nothing panics or runs out of memory (a lying array count must not abort the
//! process: the control plane's reserve-free allocator, linked here as in the broker, is
//! what makes such a count fail cleanly); what decodes is the API and version asked for.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use precursor_controlplane::gateway::{
    decode_request, DecodedRequest, Malformed, CLUSTER_APIS, SUPPORTED_APIS,
};

#[derive(Arbitrary, Debug)]
enum Input {
    /// An advertised API at one of its versions, then header rest and body bytes.
    Advertised {
        api: u8,
        version: u8,
        correlation_id: i32,
        in_cluster: bool,
        rest: Vec<u8>,
    },
    /// Any bytes as a frame.
    Raw { in_cluster: bool, frame: Vec<u8> },
}

fuzz_target!(|input: Input| {
    match input {
        Input::Advertised {
            api,
            version,
            correlation_id,
            in_cluster,
            rest,
        } => {
            let apis: Vec<_> = SUPPORTED_APIS
                .iter()
                .chain(CLUSTER_APIS.iter().filter(|_| in_cluster))
                .collect();
            let &&(api, min, max) = &apis[usize::from(api) % apis.len()];
            let version = min + (i16::from(version) % (max - min + 1));
            let mut frame = BytesMut::with_capacity(8 + rest.len());
            frame.put_i16(api as i16);
            frame.put_i16(version);
            frame.put_i32(correlation_id);
            frame.put_slice(&rest);
            match decode_request(frame.freeze(), in_cluster) {
                Ok(DecodedRequest::Request { meta, .. }) => {
                    assert_eq!(meta.api, api);
                    assert_eq!(meta.version, version);
                }
                Ok(DecodedRequest::ApiVersionsUnsupported { .. }) => {
                    panic!("{api:?} v{version} is advertised, yet refused as unsupported")
                }
                Err(Malformed::Header | Malformed::Body(..)) => {}
                Err(other) => panic!("{api:?} v{version} is advertised, yet {other}"),
            }
        }
        Input::Raw { in_cluster, frame } => {
            let _ = decode_request(Bytes::from(frame), in_cluster);
        }
    }
});
