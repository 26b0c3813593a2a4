"""The build side (a workstation with TensorFlow): data sets, model sources and weights, fine-tuning,
vocabulary pruning, TFLite conversion and quantization, the cached pipeline that ties them together, and the
export of a device's artifacts. Importing this package imports no TensorFlow; the stages import it when they run."""
