//! The response side of an ADS stream: an HTTP/2 body that hands the shared pieces of each
//! response to hyper as they are, and keeps no buffer between responses.
//!
//! tonic's encoder keeps one buffer per stream, grown to the largest message it ever encoded
//! (≈1 MiB per Envoy, for its route tables) and never shrunk: two thirds of the heap with 2,000
//! proxies. Here each data frame is either a shared piece (a resource's bytes, or a run of
//! neighbouring resources) or a fresh buffer gathering consecutive small pieces, dropped once h2
//! has written it. h2 writes a frame's payload without copying it when it is 256 bytes or more.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use tokio::sync::mpsc;
use tonic::Status;

use crate::wire::Encoded;

/// Pieces this large go out as they are; smaller ones are gathered into one frame.
const SHARE_FROM: usize = 4096;
/// The most a gathered frame holds: h2's default frame size, so a gathered frame is one DATA frame.
const GATHER_UP_TO: usize = 16 * 1024;

/// Responses a stream's task queued, as HTTP/2 data frames, ending with the gRPC status.
pub(crate) struct ResponseBody {
    responses: mpsc::Receiver<Result<Encoded, Status>>,
    /// The pieces of the response being sent, in reverse (popped from the end).
    pending: Vec<Bytes>,
    ended: bool,
}

impl ResponseBody {
    pub(crate) fn new(responses: mpsc::Receiver<Result<Encoded, Status>>) -> Self {
        Self {
            responses,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The next frame of the current response. Nothing of a response is kept once it is out.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let chunk = self.gather();
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
        chunk
    }

    /// A large piece alone, or small ones gathered.
    fn gather(&mut self) -> Option<Bytes> {
        let first = self.pending.pop()?;
        if first.len() >= SHARE_FROM {
            return Some(first);
        }
        let mut gathered = first.len();
        let mut count = 0;
        for piece in self.pending.iter().rev() {
            if piece.len() >= SHARE_FROM || gathered + piece.len() > GATHER_UP_TO {
                break;
            }
            gathered += piece.len();
            count += 1;
        }
        if count == 0 {
            return Some(first);
        }
        let mut frame = BytesMut::with_capacity(gathered);
        frame.extend_from_slice(&first);
        for _ in 0..count {
            if let Some(piece) = self.pending.pop() {
                frame.extend_from_slice(&piece);
            }
        }
        Some(frame.freeze())
    }

    fn trailers(&mut self, status: &Status) -> Frame<Bytes> {
        self.ended = true;
        let mut trailers = http::HeaderMap::new();
        if let Err(error) = status.add_header(&mut trailers) {
            // Only a status message that is not a valid header value gets here.
            tracing::debug!(%error, "ADS stream status not representable; ending with its code");
            trailers.insert(
                Status::GRPC_STATUS,
                http::HeaderValue::from(status.code() as i32),
            );
        }
        Frame::trailers(trailers)
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(chunk) = self.next_chunk() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.responses.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(response))) => {
                let mut pieces = response.pieces;
                pieces.reverse();
                self.pending = pieces;
                match self.next_chunk() {
                    Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                    // An empty response: nothing to frame. Wake to look at the next one.
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let trailers = self.trailers(&status);
                Poll::Ready(Some(Ok(trailers)))
            }
            // The stream's task ended: a clean end of the stream.
            Poll::Ready(None) => {
                let trailers = self.trailers(&Status::ok(""));
                Poll::Ready(Some(Ok(trailers)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body::Body as _;

    use super::*;

    async fn frames(body: &mut ResponseBody) -> Vec<Frame<Bytes>> {
        let mut out = Vec::new();
        while let Some(frame) = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            match frame {
                Ok(frame) => out.push(frame),
                Err(status) => panic!("body failed: {status}"),
            }
        }
        out
    }

    fn piece(len: usize, byte: u8) -> Bytes {
        Bytes::from(vec![byte; len])
    }

    #[tokio::test]
    async fn small_pieces_are_gathered_and_large_ones_go_out_as_they_are() {
        let (tx, rx) = mpsc::channel(4);
        let large = piece(100_000, 7);
        let pieces = vec![piece(5, 1), piece(30, 2), large.clone(), piece(10, 3)];
        let expected: Vec<u8> = pieces.iter().flat_map(|p| p.to_vec()).collect();
        tx.send(Ok(Encoded { pieces })).await.ok();
        drop(tx);
        let mut body = ResponseBody::new(rx);
        let frames = frames(&mut body).await;
        let data: Vec<Bytes> = frames
            .iter()
            .filter_map(|f| f.data_ref().cloned())
            .collect();
        assert_eq!(data.len(), 3);
        assert_eq!(data[0].len(), 35);
        assert_eq!(
            data[1].as_ptr(),
            large.as_ptr(),
            "the large piece was copied"
        );
        let sent: Vec<u8> = data.iter().flat_map(|d| d.to_vec()).collect();
        assert_eq!(sent, expected);
        let trailers = frames.last().and_then(|f| f.trailers_ref());
        assert_eq!(
            trailers.and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from(0))
        );
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn gathered_frames_stay_small() {
        let (tx, rx) = mpsc::channel(4);
        let pieces: Vec<Bytes> = (0..1000).map(|i| piece(300, i as u8)).collect();
        tx.send(Ok(Encoded { pieces })).await.ok();
        drop(tx);
        let mut body = ResponseBody::new(rx);
        let data: Vec<usize> = frames(&mut body)
            .await
            .iter()
            .filter_map(|f| f.data_ref().map(Bytes::len))
            .collect();
        assert_eq!(data.iter().sum::<usize>(), 300_000);
        assert!(data.iter().all(|len| *len <= GATHER_UP_TO), "{data:?}");
        assert!(data.len() < 25, "{} frames", data.len());
    }

    #[tokio::test]
    async fn a_status_ends_the_stream_in_its_trailers() {
        let (tx, rx) = mpsc::channel(4);
        tx.send(Err(Status::permission_denied("not in the mesh")))
            .await
            .ok();
        let mut body = ResponseBody::new(rx);
        let frames = frames(&mut body).await;
        assert_eq!(frames.len(), 1);
        let trailers = frames[0].trailers_ref();
        assert_eq!(
            trailers.and_then(|t| t.get("grpc-status")),
            Some(&http::HeaderValue::from(
                Status::permission_denied("").code() as i32
            ))
        );
        assert_eq!(
            trailers.and_then(|t| t.get("grpc-message")),
            Some(&http::HeaderValue::from_static("not%20in%20the%20mesh"))
        );
    }
}
