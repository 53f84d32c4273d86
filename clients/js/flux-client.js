// Placeholder: the JavaScript client is being written (clients/js/README.md).
export {};
