<?php
/**
 * Signatures of protocol 2: Standard Webhooks v1 (HMAC-SHA256 over "{id}.{timestamp}.{body}")
 * with one secret per direction, over a JSON body that names its operation and site.
 *
 * A signed request authorizes one thing: the site's key is never used as is; HKDF-SHA256
 * derives one secret for what this site sends the relay and another for what the relay sends
 * here, so a request captured on one side never verifies on the other. Every body names its
 * operation and site, and each route takes only its own. A webhook-id is taken once
 * (UserRelay_Replay_Guard). Comparisons are constant-time; the key never leaves here.
 *
 * @package UserRelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/**
 * Signs and verifies protocol-2 messages.
 */
final class UserRelay_Signature {

	/** The header naming the protocol. */
	const PROTOCOL_HEADER = 'userrelay-protocol';

	/** What this site signs for the relay. */
	const TO_RELAY = 'site-to-relay';

	/** What the relay signs for this site. */
	const TO_SITE = 'relay-to-site';

	/**
	 * The HMAC key of one direction, derived from the site's key bytes (RFC 5869 HKDF).
	 *
	 * @param string $hmac_key  The decoded site key bytes.
	 * @param string $direction self::TO_RELAY or self::TO_SITE.
	 */
	public static function direction_key( string $hmac_key, string $direction ): string {
		return hash_hkdf( 'sha256', $hmac_key, 32, 'userrelay/' . UserRelay_Facts::PROTOCOL . ' ' . $direction, 'userrelay' );
	}

	/**
	 * The webhook-signature value for one message under a derived secret.
	 *
	 * @param string $secret     A direction's key.
	 * @param string $webhook_id The webhook-id header.
	 * @param int    $timestamp  The webhook-timestamp header.
	 * @param string $body       The raw body.
	 */
	public static function sign( string $secret, string $webhook_id, int $timestamp, string $body ): string {
		return 'v1,' . base64_encode( hash_hmac( 'sha256', $webhook_id . '.' . $timestamp . '.' . $body, $secret, true ) );
	}

	/**
	 * The signed body of an operation: its name, this site's id and its parameters.
	 *
	 * @param string $operation The operation.
	 * @param string $site      This site's id at the relay.
	 * @param array  $params    Its parameters.
	 */
	public static function envelope( string $operation, string $site, array $params = array() ): string {
		return (string) wp_json_encode( array_merge( array( 'operation' => $operation, 'site' => $site ), $params ), JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE );
	}

	/**
	 * The headers (plus content type) for a body this site sends the relay now.
	 *
	 * @param string $hmac_key   The decoded site key bytes.
	 * @param string $webhook_id Kept when the same request is sent again.
	 * @param string $body       The raw body.
	 * @return array<string, string>
	 */
	public static function headers( string $hmac_key, string $webhook_id, string $body ): array {
		$timestamp = time();
		return array(
			'webhook-id'          => $webhook_id,
			'webhook-timestamp'   => (string) $timestamp,
			'webhook-signature'   => self::sign( self::direction_key( $hmac_key, self::TO_RELAY ), $webhook_id, $timestamp, $body ),
			'content-type'        => 'application/json',
			self::PROTOCOL_HEADER => (string) UserRelay_Facts::PROTOCOL,
		);
	}

	/**
	 * Whether a request of the relay speaks our protocol; a WP_Error (400) naming both if not.
	 *
	 * @param string|null $offered The userrelay-protocol header.
	 * @return true|WP_Error
	 */
	public static function check_protocol( ?string $offered ) {
		if ( (string) UserRelay_Facts::PROTOCOL === $offered ) {
			return true;
		}
		return new WP_Error(
			'userrelay_protocol_version',
			sprintf(
				/* translators: 1: our protocol version, 2: the version the request was made with. */
				__( 'This UserRelay plugin speaks protocol %1$d; the request was made with protocol %2$s: use a relay and a plugin of the same protocol version (update the older one).', 'userrelay' ),
				UserRelay_Facts::PROTOCOL,
				null === $offered || '' === $offered ? '1' : $offered
			),
			array( 'status' => 400 )
		);
	}

	/**
	 * Whether a request signed by the relay for this site is authentic and fresh; a WP_Error
	 * (401) saying why not.
	 *
	 * @param string|null $hmac_key   The decoded site key bytes, or null when none is configured.
	 * @param string|null $webhook_id The webhook-id header.
	 * @param string|null $timestamp  The webhook-timestamp header.
	 * @param string|null $signature  The webhook-signature header (space-separated list).
	 * @param string      $body       The raw body.
	 * @param int|null    $now        The current time (tests).
	 * @param string      $direction  Whose signature to expect (the relay's, normally).
	 * @return true|WP_Error
	 */
	public static function verify( ?string $hmac_key, ?string $webhook_id, ?string $timestamp, ?string $signature, string $body, ?int $now = null, string $direction = self::TO_SITE ) {
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
		if ( abs( $skew ) > UserRelay_Facts::TIMESTAMP_TOLERANCE ) {
			return self::refuse(
				'userrelay_stale_timestamp',
				sprintf(
					/* translators: 1: seconds, 2: "old" or "in the future", 3: tolerance in seconds. */
					__( 'webhook-timestamp is %1$d s %2$s; at most %3$d s is accepted. Check the clocks of this site and the relay.', 'userrelay' ),
					abs( $skew ),
					$skew > 0 ? __( 'old', 'userrelay' ) : __( 'in the future', 'userrelay' ),
					UserRelay_Facts::TIMESTAMP_TOLERANCE
				)
			);
		}
		$expected = substr( self::sign( self::direction_key( $hmac_key, $direction ), $webhook_id, (int) $timestamp, $body ), 3 );
		foreach ( preg_split( '/\s+/', trim( $signature ) ) as $candidate ) {
			if ( 0 === strpos( $candidate, 'v1,' ) && hash_equals( $expected, substr( $candidate, 3 ) ) ) {
				return true;
			}
		}
		return self::refuse( 'userrelay_bad_signature', __( "The signature does not match this site's UserRelay key: paste the site's current key from the relay.", 'userrelay' ) );
	}

	/**
	 * The signed body as an array, if it names this operation and this site; a WP_Error (400)
	 * otherwise: a body signed for one operation is never taken by another route.
	 *
	 * @param string $body      The raw body.
	 * @param string $operation The route's operation.
	 * @param string $site      This site's id at the relay.
	 * @return array|WP_Error
	 */
	public static function envelope_of( string $body, string $operation, string $site ) {
		$document = json_decode( $body, true );
		if ( ! is_array( $document ) || wp_is_numeric_array( $document ) ) {
			return new WP_Error( 'userrelay_bad_body', __( 'The body must be a JSON object naming its operation and site.', 'userrelay' ), array( 'status' => 400 ) );
		}
		$named = isset( $document['operation'] ) && is_string( $document['operation'] ) ? $document['operation'] : '';
		if ( $named !== $operation ) {
			/* translators: 1: the operation the body names, 2: the route's operation. */
			return new WP_Error( 'userrelay_wrong_operation', sprintf( __( 'The body names operation "%1$s"; this route takes "%2$s" (a signed request is valid for one operation only).', 'userrelay' ), $named, $operation ), array( 'status' => 400 ) );
		}
		$for = isset( $document['site'] ) && is_string( $document['site'] ) ? $document['site'] : '';
		if ( ! hash_equals( $site, $for ) ) {
			/* translators: 1: the site the body names, 2: this site's id. */
			return new WP_Error( 'userrelay_wrong_site', sprintf( __( 'The body names site "%1$s"; this is site "%2$s".', 'userrelay' ), $for, $site ), array( 'status' => 400 ) );
		}
		return $document;
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
