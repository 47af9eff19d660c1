//! placeholder until the events model lands
