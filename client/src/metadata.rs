//! Metadata: a topic's id, partition count and the broker's frame limit, as one broker
//! numbers and sees it; from a broker of a cluster also who leads each partition
//! ([`MetadataLeaders`]).

use std::time::Instant;

use precursor_protocol::frame::{
    is_valid_topic_name, ErrorCode, FrameHeader, MetadataLeaders, MetadataRequest,
    MetadataResponse, Opcode, FLAG_METADATA_AUTO_CREATE, FRAME_BYTES_MAX, FRAME_HEADER_BYTES,
    TOPIC_NAME_BYTES_MAX,
};

use crate::retransmit::RetransmitSchedule;
use crate::transport::{BrokerSlot, Transport};
use crate::ClientError;

/// A broker announcing a frame limit below this cannot carry one record batch header.
pub(crate) const FRAME_BYTES_MIN: usize = FRAME_HEADER_BYTES + 128;

/// What a client keeps about a topic, as one broker numbers it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicMetadata {
    /// The topic's id at the broker that answered (ids are per broker).
    pub topic_id: u16,
    pub partition_count: u16,
    /// The broker's limit, capped at what this client can send.
    pub frame_bytes_max: usize,
}

/// One broker's answer to Metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MetadataAnswer {
    pub meta: TopicMetadata,
    /// Who leads each partition, as that broker sees it: `None` from a broker outside a
    /// cluster (it leads every partition it has).
    pub leaders: Option<MetadataLeaders>,
}

/// Asks broker `slot` for `topic`'s metadata, retrying while it says the topic is being
/// created. Frames answering other requests (in-flight produces) go to `other`.
pub(crate) fn fetch_metadata(
    transport: &mut Transport,
    slot: BrokerSlot,
    schedule: &RetransmitSchedule,
    topic: &str,
    auto_create: bool,
    other: &mut dyn FnMut(BrokerSlot, &FrameHeader, &[u8]),
) -> Result<MetadataAnswer, ClientError> {
    if !is_valid_topic_name(topic) {
        return Err(ClientError::InvalidTopic {
            topic: topic.to_string(),
        });
    }
    let mut payload = [0u8; 2 + TOPIC_NAME_BYTES_MAX];
    let request = MetadataRequest { topic };
    let payload_len = request.encode(&mut payload);
    let mut header = FrameHeader::new(Opcode::Metadata, 0, 0, payload_len);
    if auto_create {
        header.flags |= FLAG_METADATA_AUTO_CREATE;
    }
    let what = format!("metadata of topic '{topic}'");
    let started = Instant::now();
    let give_up_at = schedule.give_up_at(started);
    // Bounded by the delivery timeout: each round waits at least request_timeout_ms.
    let mut not_ready_rounds = 0u32;
    loop {
        let (answer, _) = transport.exchange(
            slot,
            schedule,
            &what,
            &header,
            &payload[..payload_len],
            other,
        )?;
        let code = answer.header.error;
        if code == 0 && answer.header.opcode == Opcode::MetadataResponse {
            return decode_answer(topic, &answer.payload);
        }
        match ErrorCode::from_u16(code) {
            Some(ErrorCode::UnknownTopicOrPartition) => {
                return Err(ClientError::UnknownTopic {
                    topic: topic.to_string(),
                    broker: transport.broker(slot),
                })
            }
            Some(ErrorCode::InvalidTopic) => {
                return Err(ClientError::InvalidTopic {
                    topic: topic.to_string(),
                })
            }
            Some(c) if c.is_retriable() => {
                let pause = schedule.wait(not_ready_rounds);
                not_ready_rounds += 1;
                if Instant::now() + pause >= give_up_at {
                    return Err(ClientError::from_broker(&what, code, &answer.payload));
                }
                std::thread::sleep(pause);
            }
            _ => return Err(ClientError::from_broker(&what, code, &answer.payload)),
        }
    }
}

/// A MetadataResponse payload: the fixed 8 bytes, then the leaders section if any.
pub(crate) fn decode_answer(topic: &str, payload: &[u8]) -> Result<MetadataAnswer, ClientError> {
    let malformed = |e| ClientError::Protocol {
        detail: format!("metadata response: {e}"),
    };
    let response = MetadataResponse::decode(payload).map_err(malformed)?;
    let leaders =
        MetadataLeaders::decode(&payload[MetadataResponse::BYTES..]).map_err(malformed)?;
    Ok(MetadataAnswer {
        meta: check_response(topic, response)?,
        leaders,
    })
}

fn check_response(topic: &str, response: MetadataResponse) -> Result<TopicMetadata, ClientError> {
    if response.partition_count == 0 {
        return Err(ClientError::Protocol {
            detail: format!("metadata says topic '{topic}' has no partitions"),
        });
    }
    let frame_bytes_max = (response.frame_bytes_max as usize).min(FRAME_BYTES_MAX);
    if frame_bytes_max < FRAME_BYTES_MIN {
        return Err(ClientError::Protocol {
            detail: format!(
                "broker's frame_bytes_max {} is below the {FRAME_BYTES_MIN}-byte minimum",
                response.frame_bytes_max
            ),
        });
    }
    Ok(TopicMetadata {
        topic_id: response.topic_id,
        partition_count: response.partition_count,
        frame_bytes_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_limit_is_capped_and_checked() {
        let ok = check_response(
            "t",
            MetadataResponse {
                topic_id: 3,
                partition_count: 4,
                frame_bytes_max: 1_000_000,
            },
        )
        .unwrap();
        assert_eq!(ok.frame_bytes_max, FRAME_BYTES_MAX);
        assert_eq!(ok.topic_id, 3);
        assert!(check_response(
            "t",
            MetadataResponse {
                topic_id: 3,
                partition_count: 0,
                frame_bytes_max: 1472,
            }
        )
        .is_err());
        assert!(check_response(
            "t",
            MetadataResponse {
                topic_id: 3,
                partition_count: 1,
                frame_bytes_max: 40,
            }
        )
        .is_err());
    }
}
