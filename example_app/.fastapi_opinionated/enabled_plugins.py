ENABLED_PLUGINS = [
    "fastapi_opinionated_eventbus.plugin.EventBusPlugin",
]
