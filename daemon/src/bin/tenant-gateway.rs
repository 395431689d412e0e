//! `tenant-gateway`: the lab's reference implementation of the HTTP tenant-records contract
//! (being written).

fn main() {}
