"""Training the own CTC models: synthetic training corpora and augmentation (data), the loop (train),
model cards (model_card), growing a trained model into a wider one (grow), per-accent scorecards
(scorecard). Inference (model, features, decoding, checkpoint I/O, the recognizer backend) lives one level
up and never imports this folder."""
