<?php
/**
 * Standard Webhooks signatures (v1: HMAC-SHA256 over "{id}.{timestamp}.{body}"), both ways.
 *
 * We sign what we report to the relay with this site's key, and the relay signs what it
 * delivers to us with the same key. Comparisons are constant-time; the key never leaves here.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Signs and verifies Standard Webhooks v1 messages.
 */
final class UserRelay_Signature {

	/** Seconds a webhook-timestamp may be away from our clock (every reference library: 5 min). */
	const TOLERANCE = 300;

	/**
	 * The webhook-signature value for one message.
	 *
	 * @param string $hmac_key   The decoded key bytes.
	 * @param string $webhook_id The webhook-id header.
	 * @param int    $timestamp  The webhook-timestamp header.
	 * @param string $body       The raw body.
	 */
	public static function sign( string $hmac_key, string $webhook_id, int $timestamp, string $body ): string {
		return 'v1,' . base64_encode( hash_hmac( 'sha256', $webhook_id . '.' . $timestamp . '.' . $body, $hmac_key, true ) );
	}

	/**
	 * The three Standard Webhooks headers (plus content type) for a body sent now.
	 *
	 * @param string $hmac_key   The decoded key bytes.
	 * @param string $webhook_id Kept when the same request is sent again.
	 * @param string $body       The raw body.
	 * @return array<string, string>
	 */
	public static function headers( string $hmac_key, string $webhook_id, string $body ): array {
		$timestamp = time();
		return array(
			'webhook-id'        => $webhook_id,
			'webhook-timestamp' => (string) $timestamp,
			'webhook-signature' => self::sign( $hmac_key, $webhook_id, $timestamp, $body ),
			'content-type'      => 'application/json',
		);
	}

	/**
	 * Whether a signed request is authentic and fresh; a WP_Error (401) saying why not.
	 *
	 * @param string|null $hmac_key   The decoded key bytes, or null when none is configured.
	 * @param string|null $webhook_id The webhook-id header.
	 * @param string|null $timestamp  The webhook-timestamp header.
	 * @param string|null $signature  The webhook-signature header (space-separated list).
	 * @param string      $body       The raw body.
	 * @param int|null    $now        The current time (tests).
	 * @return true|WP_Error
	 */
	public static function verify( ?string $hmac_key, ?string $webhook_id, ?string $timestamp, ?string $signature, string $body, ?int $now = null ) {
		if ( null === $hmac_key ) {
			return self::refuse( 'userrelay_not_configured', __( 'UserRelay has no valid key on this site: set USERRELAY_KEY (or the key on Settings → UserRelay).', 'userrelay' ) );
		}
		$missing = array();
		foreach ( array( 'webhook-id' => $webhook_id, 'webhook-timestamp' => $timestamp, 'webhook-signature' => $signature ) as $name => $value ) {
			if ( null === $value || '' === $value ) {
				$missing[] = $name;
			}
		}
		if ( $missing ) {
			/* translators: %s: header names. */
			return self::refuse( 'userrelay_unsigned', sprintf( __( 'Missing header(s): %s.', 'userrelay' ), implode( ', ', $missing ) ) );
		}
		if ( ! preg_match( '/^\d{1,12}$/', $timestamp ) ) {
			return self::refuse( 'userrelay_bad_timestamp', __( 'webhook-timestamp must be whole unix seconds.', 'userrelay' ) );
		}
		$skew = ( null === $now ? time() : $now ) - (int) $timestamp;
		if ( abs( $skew ) > self::TOLERANCE ) {
			return self::refuse(
				'userrelay_stale_timestamp',
				sprintf(
					/* translators: 1: seconds, 2: "old" or "in the future", 3: tolerance in seconds. */
					__( 'webhook-timestamp is %1$d s %2$s; at most %3$d s is accepted. Check the clocks of this site and the relay.', 'userrelay' ),
					abs( $skew ),
					$skew > 0 ? __( 'old', 'userrelay' ) : __( 'in the future', 'userrelay' ),
					self::TOLERANCE
				)
			);
		}
		$expected = substr( self::sign( $hmac_key, $webhook_id, (int) $timestamp, $body ), 3 );
		foreach ( preg_split( '/\s+/', trim( $signature ) ) as $candidate ) {
			if ( 0 === strpos( $candidate, 'v1,' ) && hash_equals( $expected, substr( $candidate, 3 ) ) ) {
				return true;
			}
		}
		return self::refuse( 'userrelay_bad_signature', __( "The signature does not match this site's UserRelay key: paste the site's current key from the relay.", 'userrelay' ) );
	}

	/**
	 * A 401 error.
	 *
	 * @param string $code    Error code.
	 * @param string $message What is wrong and what to do.
	 */
	private static function refuse( string $code, string $message ): WP_Error {
		return new WP_Error( $code, $message, array( 'status' => 401 ) );
	}
}
