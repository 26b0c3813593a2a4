"""The run side: what executes a .tflite and times it. Numpy, psutil and a TFLite runtime only (no TensorFlow,
no tokenizer), because this is what travels to a device: the runtime interface, the one worker program every
target runs in a fresh process, the targets (this host, a Pi's runtime under QEMU, a device over SSH), latency
statistics and projection, and accuracy through the interpreter."""
