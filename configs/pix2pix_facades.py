"""pix2pix on the official `facades` dataset, labels->photos (the official facades_label2photo).

Download it with the official datasets/download_pix2pix_dataset.sh and set
--config.data.image_dir to the folder holding train/ and test/.
"""

from configs import pix2pix


def get_config():
  return pix2pix.get_config(image_dir='datasets/facades', direction='BtoA')
