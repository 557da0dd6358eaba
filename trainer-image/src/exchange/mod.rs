//! Peer-to-peer exchange of DeMo results over HTTP.
//!
//! Every client serves the payloads it holds (its own, and any it fetched) by content hash, so a
//! payload can come from any peer that already has it, and fetches what it is missing with a
//! pooled client that verifies every byte against the hash before keeping it. Which hashes to
//! fetch is not the exchange's to say: each participant commits its result's hash to the
//! coordinator (`Input::Commit`), and a replica fetches exactly the committed hashes a witness
//! quorum vouched for. Peers take nothing from each other but payload bytes.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/payloads/{hash}` | a payload by its hex SHA-256; single `Range: bytes=` requests get 206 |
//! | `GET /v1/model` | the latest epoch snapshot (safetensors), its step in `x-demeter-step` |
//! | `GET /metrics` | Prometheus text |

pub mod discovery;
pub mod fetch;
pub mod serve;
pub mod store;

pub use discovery::PeerDns;
pub use fetch::{FetchError, PeerClient};
pub use serve::router;
pub use store::ResultStore;
