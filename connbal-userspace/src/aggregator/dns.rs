//! DNS message decoding for the aggregator.
//!
//! hickory-proto decodes every domain name, because that is where the danger
//! is: it bounds labels and names, and only follows compression pointers
//! that point strictly backwards, so loops are impossible. The fixed-size
//! fields around the names are read here instead of through hickory's
//! `Record::read`, for two reasons: we need only A, AAAA, SRV and CNAME, and
//! `Record::read` fully parses every other RDATA type too, so a record we
//! would have skipped (an odd SVCB, say) could reject a message whose backends
//! are perfectly readable.

use super::name::presentation;
use hickory_proto::rr::Name;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, DecodeError};
use std::net::{Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
/// Not a DNS type (0 is reserved): the question of a lookup seen in libc's
/// getaddrinfo, which asks for addresses of both families at once.
pub const TYPE_GETADDRINFO: u16 = 0;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

pub const HEADER_LEN: usize = 12;
/// Smallest possible resource record: a root owner name (1 byte) plus type,
/// class, TTL and RDLENGTH (10 bytes). Used to reject lying counts before
/// any allocation is sized by them.
const MIN_RECORD_LEN: usize = 11;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("message shorter than the 12-byte header")]
    ShortHeader,
    #[error("bad name: {0}")]
    Name(String),
    #[error("record counts claim more records than the message can hold")]
    CountsTooLarge,
    #[error("message ends inside a record")]
    RecordPastEnd,
    #[error("RDATA runs past the end of the message")]
    RdataPastEnd,
    #[error("RDATA length {len} is wrong for type {rtype}")]
    RdataLength { rtype: u16, len: u16 },
}

impl From<DecodeError> for DnsError {
    fn from(error: DecodeError) -> Self {
        match error {
            DecodeError::InsufficientBytes => DnsError::RecordPastEnd,
            other => DnsError::Name(other.to_string()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub is_response: bool,
    /// TC: the server cut the message to fit; the client will ask again.
    pub truncated: bool,
    pub questions: u16,
    pub answers: u16,
    pub authorities: u16,
    pub additionals: u16,
}

impl Header {
    pub fn parse(message: &[u8]) -> Result<Self, DnsError> {
        let h: &[u8; HEADER_LEN] = message
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(DnsError::ShortHeader)?;
        let word = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Ok(Self {
            id: word(0),
            is_response: h[2] & 0x80 != 0,
            truncated: h[2] & 0x02 != 0,
            questions: word(4),
            answers: word(6),
            authorities: word(8),
            additionals: word(10),
        })
    }

    fn record_count(&self) -> usize {
        usize::from(self.answers) + usize::from(self.authorities) + usize::from(self.additionals)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Cname,
    Opt,
    Other,
}

impl RecordData {
    /// The address of an A or AAAA record.
    pub fn address(&self) -> Option<std::net::IpAddr> {
        match self {
            RecordData::A(a) => Some((*a).into()),
            RecordData::Aaaa(a) => Some((*a).into()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub section: Section,
    /// Presentation form; empty for types whose owner the aggregator never
    /// looks at, to save formatting it.
    pub owner: String,
    pub class: u16,
    pub ttl: u32,
    pub data: RecordData,
}

/// A decoded message: the one question and every record, in wire order.
#[derive(Debug)]
pub struct Message {
    pub header: Header,
    pub question: Question,
    pub records: Vec<Record>,
}

/// Reads the header and the first question only: enough to start or match a
/// pending query without decoding any records.
pub fn parse_question(message: &[u8]) -> Result<(Header, Question, usize), DnsError> {
    let header = Header::parse(message)?;
    let mut decoder = BinDecoder::new(message);
    decoder.read_slice(HEADER_LEN)?;
    let name = Name::read(&mut decoder)?;
    let qtype = decoder.read_u16()?.unverified(/* any type is representable */);
    let qclass = decoder.read_u16()?.unverified(/* any class is representable */);
    let question = Question {
        name: presentation(&name),
        qtype,
        qclass,
    };
    Ok((header, question, decoder.index()))
}

/// Decodes every record after a single question, whose presentation-form
/// name is `question_name`. Fails as a whole on the first malformed record,
/// so a damaged message is skipped, never half-counted.
pub fn parse_records(
    message: &[u8],
    header: &Header,
    after_question: usize,
    question_name: &str,
) -> Result<Vec<Record>, DnsError> {
    let count = header.record_count();
    let room = message.len().saturating_sub(after_question);
    if count.saturating_mul(MIN_RECORD_LEN) > room {
        return Err(DnsError::CountsTooLarge);
    }
    let mut decoder = BinDecoder::new(message);
    decoder.read_slice(after_question)?;
    let mut records = Vec::with_capacity(count);
    let sections = [
        (Section::Answer, header.answers),
        (Section::Authority, header.authorities),
        (Section::Additional, header.additionals),
    ];
    for (section, n) in sections {
        for _ in 0..n {
            records.push(read_record(&mut decoder, message, section, question_name)?);
        }
    }
    Ok(records)
}

/// A compression pointer to offset 12, where the question's name starts:
/// how nearly every answer names its owner.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 12];

fn read_record(
    decoder: &mut BinDecoder<'_>,
    message: &[u8],
    section: Section,
    question_name: &str,
) -> Result<Record, DnsError> {
    let message_len = message.len();
    // The question's name is already decoded and validated; decoding and
    // formatting it again for every answer was the largest cost of a
    // response in profiles.
    let at = decoder.index();
    let owner_name = if message.get(at..at + 2) == Some(&POINTER_TO_QUESTION[..]) {
        decoder.read_slice(2)?;
        None
    } else {
        Some(Name::read(decoder)?)
    };
    let rtype = decoder.read_u16()?.unverified(/* any type */);
    let class = decoder.read_u16()?.unverified(/* checked by the aggregator */);
    let ttl = decoder.read_u32()?.unverified(/* any TTL */);
    // RFC 2181 section 8: a TTL with the top bit set is read as zero. It
    // also keeps u32::MAX free to mean "no TTL" (`TTL_UNKNOWN`).
    let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
    let rdlength = decoder.read_u16()?.unverified(/* bounded just below */);
    let rdata_start = decoder.index();
    let rdata_end = rdata_start + usize::from(rdlength);
    if rdata_end > message_len {
        return Err(DnsError::RdataPastEnd);
    }
    let fixed = |want: u16| -> Result<(), DnsError> {
        if rdlength == want {
            Ok(())
        } else {
            Err(DnsError::RdataLength {
                rtype,
                len: rdlength,
            })
        }
    };
    let wants_owner;
    let data = match rtype {
        TYPE_A => {
            fixed(4)?;
            let b = decoder.read_slice(4)?.unverified(/* length checked */);
            wants_owner = true;
            RecordData::A(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
        TYPE_AAAA => {
            fixed(16)?;
            let b: [u8; 16] = decoder
                .read_slice(16)?
                .unverified(/* length checked */)
                .try_into()
                .map_err(|_| DnsError::RecordPastEnd)?;
            wants_owner = true;
            RecordData::Aaaa(Ipv6Addr::from(b))
        }
        TYPE_SRV => {
            if rdlength < 7 {
                return Err(DnsError::RdataLength {
                    rtype,
                    len: rdlength,
                });
            }
            let priority = decoder.read_u16()?.unverified(/* any */);
            let weight = decoder.read_u16()?.unverified(/* any */);
            let port = decoder.read_u16()?.unverified(/* any */);
            let target = Name::read(decoder)?;
            if decoder.index() != rdata_end {
                return Err(DnsError::RdataPastEnd);
            }
            wants_owner = true;
            RecordData::Srv {
                priority,
                weight,
                port,
                target: presentation(&target),
            }
        }
        TYPE_CNAME => {
            // Decoded although only its presence matters: a CNAME whose
            // target is garbage marks the message as malformed.
            Name::read(decoder)?;
            if decoder.index() != rdata_end {
                return Err(DnsError::RdataPastEnd);
            }
            wants_owner = false;
            RecordData::Cname
        }
        TYPE_OPT => {
            decoder.read_slice(usize::from(rdlength))?;
            wants_owner = false;
            RecordData::Opt
        }
        _ => {
            decoder.read_slice(usize::from(rdlength))?;
            wants_owner = false;
            RecordData::Other
        }
    };
    let owner = match (wants_owner, &owner_name) {
        (false, _) => String::new(),
        (true, None) => question_name.to_string(),
        (true, Some(name)) => presentation(name),
    };
    Ok(Record {
        section,
        owner,
        class,
        ttl,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MessageBuilder;

    fn decode(message: &[u8]) -> Result<Message, DnsError> {
        let (header, question, at) = parse_question(message)?;
        let records = parse_records(message, &header, at, &question.name)?;
        Ok(Message {
            header,
            question,
            records,
        })
    }

    #[test]
    fn owners_pointing_at_the_question_decode_as_the_question_name() {
        let name = "Web.Example.COM";
        let spelled_out = MessageBuilder::new(1, true, [1, 2, 0, 0])
            .question(name, TYPE_A)
            .a(name, [10, 0, 0, 1])
            .a(name, [10, 0, 0, 2])
            .build();
        // An A record whose owner is written as the given raw bytes.
        #[expect(
            clippy::items_after_statements,
            reason = "a helper beside the messages it builds"
        )]
        fn a_with_owner(m: &mut MessageBuilder, owner: &[u8], last: u8) {
            m.raw(owner)
                .u16(TYPE_A)
                .u16(CLASS_IN)
                .raw(&300u32.to_be_bytes())
                .u16(4)
                .raw(&[10, 0, 0, last]);
        }
        let mut compressed = MessageBuilder::new(1, true, [1, 2, 0, 0]);
        compressed.question(name, TYPE_A);
        for last in [1u8, 2] {
            a_with_owner(&mut compressed, &[0xc0, 12], last);
        }
        let a = decode(&spelled_out).unwrap();
        let b = decode(&compressed.build()).unwrap();
        assert_eq!(a.records, b.records);
        assert_eq!(b.records[0].owner, "Web.Example.COM.");
        // A pointer elsewhere still goes through the full decoder, and one
        // past the end is an error, as before.
        let mut elsewhere = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        elsewhere.question(name, TYPE_A);
        a_with_owner(&mut elsewhere, &[0xc0, 16], 3);
        assert_eq!(
            decode(&elsewhere.build()).unwrap().records[0].owner,
            "Example.COM."
        );
        let mut cut = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        cut.question(name, TYPE_A).raw(&[0xc0]);
        assert!(decode(&cut.build()).is_err());
    }

    #[test]
    fn decodes_answers_srv_and_opt() {
        let msg = MessageBuilder::new(7, true, [1, 2, 0, 2])
            .question("_x._tcp.example.com", TYPE_SRV)
            .srv("_x._tcp.example.com", 5222, "a.example.com")
            .srv("_x._tcp.example.com", 5223, "b.example.com")
            .a("a.example.com", [192, 0, 2, 1])
            .opt()
            .build();
        let m = decode(&msg).unwrap();
        assert_eq!(m.header.id, 7);
        assert!(m.header.is_response);
        assert_eq!(m.question.name, "_x._tcp.example.com.");
        assert_eq!(m.records.len(), 4);
        assert_eq!(
            m.records[1].data,
            RecordData::Srv {
                priority: 10,
                weight: 5,
                port: 5223,
                target: "b.example.com.".into()
            }
        );
        assert_eq!(m.records[2].section, Section::Additional);
        assert_eq!(m.records[3].data, RecordData::Opt);
    }

    #[test]
    fn compression_loop_is_rejected() {
        // The answer's owner is a pointer to itself.
        let mut b = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        b.question("x.example", TYPE_A);
        let at = b.bytes.len() as u16;
        b.raw(&(0xc000 | at).to_be_bytes())
            .u16(TYPE_A)
            .u16(CLASS_IN)
            .raw(&[0; 4])
            .u16(4)
            .raw(&[1, 2, 3, 4]);
        assert!(matches!(decode(&b.build()), Err(DnsError::Name(_))));
    }

    #[test]
    fn forward_pointer_is_rejected() {
        let mut b = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        b.question("x.example", TYPE_A);
        let at = b.bytes.len() as u16 + 20;
        b.raw(&(0xc000 | at).to_be_bytes())
            .u16(TYPE_A)
            .u16(CLASS_IN)
            .raw(&[0; 4])
            .u16(4)
            .raw(&[1, 2, 3, 4]);
        b.raw(&[0; 8]);
        assert!(matches!(decode(&b.build()), Err(DnsError::Name(_))));
    }

    #[test]
    fn label_past_the_end_is_rejected() {
        let mut b = MessageBuilder::new(1, false, [1, 0, 0, 0]);
        b.raw(&[40, b'a', b'b']);
        assert!(parse_question(&b.build()).is_err());
    }

    #[test]
    fn name_over_255_bytes_is_rejected() {
        let long = vec!["a".repeat(63); 5].join(".");
        let msg = MessageBuilder::new(1, false, [1, 0, 0, 0])
            .question(&long, TYPE_A)
            .build();
        assert!(matches!(parse_question(&msg), Err(DnsError::Name(_))));
    }

    #[test]
    fn rdata_past_the_end_is_rejected() {
        let mut b = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        b.question("x.example", TYPE_A)
            .name("x.example")
            .u16(TYPE_A)
            .u16(CLASS_IN)
            .raw(&[0; 4])
            .u16(4)
            .raw(&[1, 2]);
        assert_eq!(decode(&b.build()).unwrap_err(), DnsError::RdataPastEnd);
    }

    #[test]
    fn srv_rdata_cut_short_is_rejected() {
        let mut b = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        b.question("_s._tcp.x", TYPE_SRV).record(
            "_s._tcp.x",
            TYPE_SRV,
            CLASS_IN,
            &[0, 1, 0, 1, 0x14],
        );
        assert!(decode(&b.build()).is_err());
    }

    #[test]
    fn srv_target_running_past_its_rdata_is_rejected() {
        let mut b = MessageBuilder::new(1, true, [1, 1, 0, 0]);
        // RDLENGTH 8 covers the fixed part and 2 bytes of a longer target.
        b.question("_s._tcp.x", TYPE_SRV)
            .name("_s._tcp.x")
            .u16(TYPE_SRV)
            .u16(CLASS_IN)
            .raw(&[0; 4])
            .u16(8);
        b.raw(&[0, 1, 0, 1, 0, 80]).name("target.example");
        assert!(decode(&b.build()).is_err());
    }

    #[test]
    fn lying_answer_count_is_rejected_without_allocating_for_it() {
        let msg = MessageBuilder::new(1, true, [1, 65535, 65535, 65535])
            .question("x.example", TYPE_A)
            .build();
        assert_eq!(decode(&msg).unwrap_err(), DnsError::CountsTooLarge);
    }

    #[test]
    fn wrong_a_length_is_rejected() {
        let msg = MessageBuilder::new(1, true, [1, 1, 0, 0])
            .question("x.example", TYPE_A)
            .record("x.example", TYPE_A, CLASS_IN, &[1, 2, 3])
            .build();
        assert!(matches!(decode(&msg), Err(DnsError::RdataLength { .. })));
    }

    #[test]
    fn short_header_is_rejected() {
        assert_eq!(Header::parse(&[0; 11]).unwrap_err(), DnsError::ShortHeader);
    }
}
