//! The request side of an ADS stream: gRPC messages decoded from the HTTP/2 body.
//!
//! tonic's decoder, like its encoder, keeps a buffer per stream grown to the largest message (a
//! SotW EDS request names every cluster: ≈80 KiB per Envoy). Here a buffer holds only a message
//! still arriving, and is let go as soon as it is empty.

use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::BytesMut;
use http_body::Body as _;
use tonic::{Code, Status};

use crate::request::Decode;
use crate::wire::GRPC_HEADER;

/// The messages of a request body, in order.
pub(crate) struct RequestStream<T> {
    body: tonic::body::Body,
    buf: BytesMut,
    max_message_size: usize,
    ended: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: Decode> RequestStream<T> {
    pub(crate) fn new(body: tonic::body::Body, max_message_size: usize) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            max_message_size,
            ended: false,
            _message: PhantomData,
        }
    }

    /// The next message; `None` once the client closed its side (or cancelled the stream).
    pub(crate) async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(message) = self.decode()? {
                return Ok(Some(message));
            }
            if self.ended {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::internal("Unexpected EOF decoding stream."))
                };
            }
            match poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    // Trailers carry nothing a request stream needs.
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(status)) if status.code() == Code::Cancelled => self.ended = true,
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
    }

    /// A whole message from the buffer, if one is there.
    fn decode(&mut self) -> Result<Option<T>, Status> {
        let Some(header) = self.buf.get(..GRPC_HEADER) else {
            return Ok(None);
        };
        if header[0] != 0 {
            return Err(Status::unimplemented(
                "compressed ADS requests are not supported",
            ));
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.max_message_size {
            return Err(Status::out_of_range(format!(
                "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes",
                self.max_message_size
            )));
        }
        if self.buf.len() < GRPC_HEADER + len {
            return Ok(None);
        }
        // Frozen, not copied: a message may keep slices of its bytes (a SotW request's names).
        let frame = self.buf.split_to(GRPC_HEADER + len).freeze();
        let message = T::decode_message(frame.slice(GRPC_HEADER..))
            .map_err(|e| Status::internal(format!("decoding a request: {e}")))?;
        if self.buf.is_empty() {
            // An emptied buffer still holds its allocation (however little `capacity()` says is
            // left after the read position): let it go, the next message allocates what it needs.
            self.buf = BytesMut::new();
        }
        Ok(Some(message))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use prost::Message;

    use super::*;
    use crate::request::SotwRequest;

    fn frame(message: &DiscoveryRequest) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn stream_of(chunks: Vec<Vec<u8>>) -> RequestStream<SotwRequest> {
        let frames = chunks
            .into_iter()
            .map(|c| Ok::<_, Status>(http_body::Frame::data(Bytes::from(c))));
        let body = StreamBody::new(tokio_stream::iter(frames));
        RequestStream::new(tonic::body::Body::new(body), 1 << 20)
    }

    fn mk(names: usize) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: "t".to_owned(),
            resource_names: (0..names)
                .map(|i| format!("outbound|80||svc-{i}"))
                .collect(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn messages_split_across_frames_and_sharing_one_are_decoded() {
        let (a, b) = (mk(1), mk(3000));
        let mut bytes = frame(&a);
        bytes.extend(frame(&b));
        bytes.extend(frame(&a));
        // Frames cut at odd places, one of them inside the header.
        let cuts = [3, 20, 40_000, bytes.len()];
        let mut chunks = Vec::new();
        let mut at = 0;
        for cut in cuts {
            chunks.push(bytes[at..cut].to_vec());
            at = cut;
        }
        let mut stream = stream_of(chunks);
        let read = |r: &DiscoveryRequest| Some(Some(SotwRequest::from(r)));
        assert_eq!(stream.message().await.ok(), read(&a));
        assert_eq!(stream.message().await.ok(), read(&b));
        assert_eq!(stream.message().await.ok(), read(&a));
        assert_eq!(
            stream.buf.capacity(),
            0,
            "the large message's buffer is kept"
        );
        assert_eq!(stream.message().await.ok(), Some(None));
    }

    #[tokio::test]
    async fn a_cut_message_a_compressed_one_and_an_oversized_one_are_errors() {
        let whole = frame(&mk(2));
        let mut cut = stream_of(vec![whole[..whole.len() - 1].to_vec()]);
        assert_eq!(
            cut.message().await.map_err(|s| s.code()),
            Err(Code::Internal)
        );

        let mut compressed = whole.clone();
        compressed[0] = 1;
        let mut stream = stream_of(vec![compressed]);
        assert_eq!(
            stream.message().await.map_err(|s| s.code()),
            Err(Code::Unimplemented)
        );

        let mut big = stream_of(vec![frame(&mk(100_000))]);
        assert_eq!(
            big.message().await.map_err(|s| s.code()),
            Err(Code::OutOfRange)
        );
    }
}
