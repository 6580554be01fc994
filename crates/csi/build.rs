//! Compiles the CSI subset in `proto/csi.proto` into the server traits and
//! messages (`protoc` comes from the system, as for etcd-client's protos).

fn main() {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .compile_protos(&["proto/csi.proto"], &["proto"])
        .expect("compiling proto/csi.proto (is protoc installed? `make system-deps`)");
}
