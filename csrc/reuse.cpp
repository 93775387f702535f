// Operator registry for the `reuse` extension.
//
// Every operator schema of the `reuse` namespace is declared here, once.
// Kernels live elsewhere: one `<family>_cpu.cpp` per op family registers CPU
// kernels with TORCH_LIBRARY_IMPL(reuse, CPU, m), and `cuda/<family>_cuda.cu`
// registers CUDA kernels with TORCH_LIBRARY_IMPL(reuse, CUDA, m). Shape
// inference for torch.compile (the "fake" kernels) is registered from Python
// in reuse/ops/__init__.py.

#include <Python.h>

#include <torch/library.h>

TORCH_LIBRARY(reuse, m) {
  // EL2N score (Paul et al. 2021): per row, || softmax(logits_i) - onehot(targets_i) ||_2.
  // logits [B, C] float32/float64/float16/bfloat16, targets [B] int64/int32.
  // Returns [B], float64 for float64 logits and float32 otherwise.
  m.def("el2n(Tensor logits, Tensor targets) -> Tensor");

  // Knowledge-distillation loss (Hinton et al. 2015), mean over rows of
  // alpha T^2 KL(p_teacher || softmax(s / T)) + (1 - alpha) CE(s, targets); see csrc/kd_loss.h.
  // kind 0: teacher [B, C] logits, p = softmax(t / T); kind 1: teacher [B, C] probabilities.
  // loss: 0-d, float64 for float64 s and float32 otherwise; row_stats [B, 5]: per-row
  // statistics the backward reads. bwd returns d loss / d s scaled by grad (0-d).
  m.def("kd_loss_fwd(Tensor s, Tensor t, Tensor targets, float temperature, float alpha, int kind) -> (Tensor loss, Tensor row_stats)");
  m.def("kd_loss_bwd(Tensor grad, Tensor s, Tensor t, Tensor targets, Tensor row_stats, float temperature, float alpha, int kind) -> Tensor");
  // Top-k teacher as stored by reuse/cache.py: values [B, k], indices [B, k] (int16/32/64),
  // logsumexp [B]; the C - k other classes share the remaining mass. row_stats [B, 6].
  m.def("kd_loss_topk_fwd(Tensor s, Tensor values, Tensor indices, Tensor lse, Tensor targets, float temperature, float alpha) -> (Tensor loss, Tensor row_stats)");
  m.def("kd_loss_topk_bwd(Tensor grad, Tensor s, Tensor values, Tensor indices, Tensor targets, Tensor row_stats, float temperature, float alpha) -> Tensor");
}

// `import reuse._C` only needs a module object: importing it loads this shared
// library, whose static initialisers register the operators above with the
// dispatcher. The module carries no functions, only build facts.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",
      "Compiled kernels of the reuse package; operators are exposed as torch.ops.reuse.*",
      -1,
      nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) {
    return nullptr;
  }
#ifdef REUSE_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) != 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
