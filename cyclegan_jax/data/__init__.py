"""Image data: sources (TFDS data sources, image folders, the quick start's
built-in dataset), the official preprocessing, unpaired and paired batches.
  input_pipeline   unpaired sources, preprocessing, UnpairedBatches
  paired_data      pix2pix's paired sources and PairedBatches
  quickstart_data  the offline quick-start dataset (scikit-image's photos)
It knows nothing of models or families."""
