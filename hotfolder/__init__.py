"""hotfolder: a drop folder that turns videos plus scripts into lip-synced talking videos."""

__version__ = "0.1.0"
