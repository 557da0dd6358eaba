//! Peer-to-peer exchange of DeMo results over HTTP.
//!
//! Every client serves the payloads it holds (its own, and any it fetched) by content hash, so a
//! payload can come from any peer that already has it; takes signed commitments (who published
//! which hash for which step) from the round's peers; and fetches what it is missing with a
//! pooled client that verifies every byte against the commitment before keeping it.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/payloads/{hash}` | a payload by its hex SHA-256; single `Range: bytes=` requests get 206 |
//! | `POST /v1/commitments` | announce a signed [`Commitment`] (postcard) |
//! | `GET /v1/commitments/{step}` | the commitments this client holds for a step (postcard) |
//! | `GET /metrics` | Prometheus text |

pub mod commitment;
pub mod discovery;
pub mod fetch;
pub mod serve;
pub mod store;

pub use commitment::Commitment;
pub use discovery::PeerDns;
pub use fetch::{FetchError, PeerClient};
pub use serve::router;
pub use store::ResultStore;
