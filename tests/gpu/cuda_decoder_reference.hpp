#pragma once
// Host-only half of test_cuda_decoder.cu (the .cu holds the CUDA decoder's
// device half and checks for a device): cuda_decoder_reference.cpp compares
// infer::cuda_decoder with the CPU kv_decoder on the committed fixtures.
namespace staticgrad::test {

// Returns 0 (pass) or 1 (fail); prints one line per check on stdout.
int cuda_decoder_check();

}  // namespace staticgrad::test
