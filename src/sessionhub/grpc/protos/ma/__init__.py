"""Generated gRPC code (scripts/gen-protos); edit the .proto files instead."""
