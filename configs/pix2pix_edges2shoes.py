"""pix2pix on the official `edges2shoes` dataset, edges->shoe photos.

Download it with the official datasets/download_pix2pix_dataset.sh and set
--config.data.image_dir to the folder holding train/ and test/.
"""

from configs import pix2pix


def get_config():
  return pix2pix.get_config(image_dir='datasets/edges2shoes', direction='AtoB')
