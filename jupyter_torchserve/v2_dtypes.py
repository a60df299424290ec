"""KServe v2 / OIP tensor datatypes and the numpy dtypes they travel as (BYTES aside), for
the engine and the clients alike, and the one output name both sides agree on."""

#: The output `/v2/models/{m}/explain` answers with (KServe's TorchServe sample names it so)
EXPLAIN_OUTPUT = "explain"

V2_DTYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
}

#: datatype -> the typed `contents` field of a gRPC InferTensorContents that carries it
#: (FP16/BF16 have none: raw_input_contents only)
GRPC_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
