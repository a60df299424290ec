"""``ts.torch_handler`` (compat): BaseHandler, VisionHandler and ImageClassifier without torchvision."""
