"""One builder module per runtime: each makes that runtime's FP32 and INT8 artifacts."""
