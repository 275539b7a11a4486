//! Peer messages on the wire (being written).
