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

  // Per-example squared gradient norms for GraNd scoring (see csrc/grad_norm.h and
  // reuse/ops/grad_norms.py). Each op returns [B]: the squared L2 norm of example b's
  // gradient with respect to one layer's weight (plus its bias when bias=True), given the
  // layer's input activations and the gradient of the loss with respect to its output.
  // float64 for float64 inputs, float32 otherwise. None of them forms the batched weight
  // gradient.
  // Linear: a [B, Din] or [B, T, Din], g [B, Dout] or [B, T, Dout].
  m.def("linear_sq_norms(Tensor a, Tensor g, bool bias) -> Tensor");
  // Convolution (zero padding): x [B, Cin, *spatial] (1 or 2 spatial dims), g [B, Cout, *out_spatial].
  m.def("conv_sq_norms(Tensor x, Tensor g, int[] kernel_size, int[] stride, int[] padding, int[] dilation, int groups, bool bias) -> Tensor");
  // Affine of a normalisation layer: x, g [B, C, S]; xhat = x * scale[c] + shift[c]
  // (xhat = x when scale and shift are None); weight grad sum_s g * xhat, bias grad sum_s g.
  m.def("affine_sq_norms(Tensor x, Tensor g, Tensor? scale, Tensor? shift, bool weight, bool bias) -> Tensor");
  // Embedding: indices [B, T] int64/int32, g [B, T, D]; rows equal to padding_idx (when >= 0)
  // get no gradient.
  m.def("embedding_sq_norms(Tensor indices, Tensor g, int num_embeddings, int padding_idx) -> Tensor");
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
