#pragma once
// The file-format layer in one include. What each header provides:
//  atomic_file.hpp        write_file_atomic / write_text_atomic (temp + fsync + rename)
//  json_util.hpp          parse_json_strict (duplicate keys rejected), typed getters with context
//  mapped_file.hpp        read-only mmap of a file
//  safetensors.hpp        parse_safetensors, safetensors_file, tensor_view, to_f32, to_bf16, require_shape
//  safetensors_writer.hpp write_safetensors, tensor_data, f32_tensor / bf16_tensor / i64_tensor
//  checkpoint.hpp         checkpoint::open (single file or sharded index), lm_head_weight (tied embeddings)
//  hf_config.hpp          hf_config, read_hf_config, write_hf_config (Qwen2 config.json)
//  peft_adapter.hpp       lora_config, lora_adapter, read_peft_adapter, write_peft_adapter, lora_key
// Formats and validation rules: docs/formats.md.
#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/io/checkpoint.hpp"
#include "staticgrad/io/hf_config.hpp"
#include "staticgrad/io/json_util.hpp"
#include "staticgrad/io/mapped_file.hpp"
#include "staticgrad/io/peft_adapter.hpp"
#include "staticgrad/io/safetensors.hpp"
#include "staticgrad/io/safetensors_writer.hpp"
